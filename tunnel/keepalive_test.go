package tunnel

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakePinger answers pings (or not) at once, on its clock.
type fakePinger struct {
	clock  Clock
	answer bool
	pings  atomic.Int64
	mu     sync.Mutex
	seen   time.Time
}

func (p *fakePinger) Ping(ctx context.Context) error {
	p.pings.Add(1)
	if !p.answer {
		return context.DeadlineExceeded
	}
	p.mu.Lock()
	p.seen = p.clock.Now() // the pong
	p.mu.Unlock()
	return nil
}

func (p *fakePinger) LastSeen() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

func TestKeepalive(t *testing.T) {
	const interval = 15 * time.Second
	for _, tt := range []struct {
		name   string
		answer bool
		busy   bool
		deadAt int // the tick that reports ErrLinkDead; 0 for never
	}{
		{name: "pongs keep it alive", answer: true},
		{name: "silence kills it after two intervals", deadAt: 2},
		{name: "a slow client is not silence", busy: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := newStepClock()
			p := &fakePinger{clock: clock, answer: tt.answer, seen: clock.Now()}
			var busy atomic.Bool
			busy.Store(tt.busy)
			k := &Keepalive{Pinger: p, Interval: interval, Clock: clock, Busy: &busy}
			for tick := 1; tick <= 20; tick++ {
				clock.Advance(interval)
				err := k.Tick(context.Background())
				k.Wait()
				switch {
				case tick == tt.deadAt && !errors.Is(err, ErrLinkDead):
					t.Fatalf("tick %d: %v, want ErrLinkDead", tick, err)
				case tick == tt.deadAt:
					return
				case err != nil:
					t.Fatalf("tick %d: %v on a live link", tick, err)
				}
			}
			if tt.deadAt != 0 {
				t.Fatal("never declared dead")
			}
			if p.pings.Load() != 20 {
				t.Errorf("%d pings in 20 ticks", p.pings.Load())
			}
		})
	}
}
