package tunnel

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Pinger is a link that can be pinged and knows when it last heard from
// the other end.
type Pinger interface {
	Ping(ctx context.Context) error
	LastSeen() time.Time
}

// Keepalive pings a link and judges whether it still lives. Its owner calls
// Tick every Interval; the relay does, from the goroutine that already
// waits on the connection, so an idle connection costs no goroutine for it.
//
// A link is dead when nothing (no pong, no data) has arrived for two
// intervals. While Busy is set the relay is blocked writing to a slow
// client and cannot read pongs, so silence then is not held against the
// link. The pings are also what keep a sprite awake while connections are
// open: the service counts them as activity.
type Keepalive struct {
	Pinger   Pinger
	Interval time.Duration
	Clock    Clock
	Busy     *atomic.Bool

	pinging atomic.Bool
	wg      sync.WaitGroup
}

// Tick returns ErrLinkDead if the link has been silent too long; otherwise
// it sends a ping. Ping waits for its pong, which arrives through the
// relay's reader, so it runs on a goroutine that lives one round trip.
func (k *Keepalive) Tick(ctx context.Context) error {
	if k.Clock.Now().Sub(k.Pinger.LastSeen()) >= 2*k.Interval && (k.Busy == nil || !k.Busy.Load()) {
		return ErrLinkDead
	}
	if k.pinging.CompareAndSwap(false, true) {
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			defer k.pinging.Store(false)
			pctx, cancel := context.WithTimeout(ctx, k.Interval)
			defer cancel()
			_ = k.Pinger.Ping(pctx) // the verdict comes from LastSeen, which the pong updates
		}()
	}
	return nil
}

// Wait returns when no ping is in flight; cancel Tick's context first.
func (k *Keepalive) Wait() { k.wg.Wait() }
