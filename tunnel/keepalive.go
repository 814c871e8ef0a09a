package tunnel

import (
	"context"
	"sync/atomic"
	"time"
)

// Pinger is a link that can be pinged and knows when it last heard from
// the other end.
type Pinger interface {
	Ping(ctx context.Context) error
	LastSeen() time.Time
}

// Keepalive pings p every interval until ctx ends, and returns ErrLinkDead
// when nothing (no pong, no data) has arrived for two intervals. While busy
// is set the relay is blocked writing to a slow client and cannot read
// pongs, so silence then is not held against the link.
//
// The pings are also what keep a sprite awake while connections are open:
// the service counts them as activity.
func Keepalive(ctx context.Context, p Pinger, interval time.Duration, clock Clock, busy *atomic.Bool) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-clock.After(interval):
		}
		pctx, cancel := context.WithTimeout(ctx, interval)
		err := p.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil || (busy != nil && busy.Load()) {
			continue
		}
		if clock.Now().Sub(p.LastSeen()) >= 2*interval {
			return ErrLinkDead
		}
	}
}
