package tunnel_test

import (
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
	"github.com/spritefwd/spritefwd/tunnel"
)

// tickClock is the system clock, except that a wait of exactly every
// ends when the test ticks.
type tickClock struct {
	tunnel.SystemClock
	every time.Duration
	tick  chan time.Time
}

func (c *tickClock) After(d time.Duration) <-chan time.Time {
	if d == c.every {
		return c.tick
	}
	return c.SystemClock.After(d)
}

// The list of sprites is asked once per period for the whole daemon,
// however many sprites have auto_forward on, with its pages followed:
// one tick looks at every auto-forward sprite that runs, and costs a
// sleeping one no call and no wake.
func TestAutoListOncePerDaemon(t *testing.T) {
	t.Parallel()
	sim := spritestest.NewServer(spritestest.Options{Token: e2eToken, IdleSleep: time.Hour, ListPageSize: 2})
	t.Cleanup(sim.Close)
	for _, name := range []string{"api", "dev", "web", "zzz"} {
		sim.CreateSprite(name)
	}
	if err := sim.Sleep("web"); err != nil {
		t.Fatal(err)
	}
	clock := &tickClock{every: 7777 * time.Millisecond, tick: make(chan time.Time)}
	d := autoDaemon(t, sim, t.TempDir(), "sprites:\n  api: {auto_forward: true}\n  dev: {auto_forward: true}\n  web: {auto_forward: true}\n", &testsvc.LogBuffer{},
		func(o *tunnel.Options) { o.AutoListEvery, o.Clock = clock.every, clock })
	t.Cleanup(func() { d.Shutdown(time.Second) })
	stats := func(name string) spritestest.Stats {
		st, _ := sim.SpriteStats(name)
		return st
	}

	// The loop takes a tick only when it is back at its wait: the send
	// after a tick says that tick's work is done.
	clock.tick <- time.Now()
	testsvc.Eventually(t, "a look at each running sprite", func() bool { return stats("api").Execs == 1 && stats("dev").Execs == 1 })
	clock.tick <- time.Now()
	if got := sim.ListCalls(); got < 2 || got > 3 {
		t.Errorf("after one tick, %d list calls; want one list of 2 pages (four sprites, two a page)", got)
	}
	// Looked at, api and dev wait lookSpacing; web alone is asked about,
	// by its name as the prefix: one page.
	testsvc.Eventually(t, "the second tick's list", func() bool { return sim.ListCalls() >= 3 })
	clock.tick <- time.Now()
	if got := sim.ListCalls(); got < 3 || got > 4 {
		t.Errorf("after two ticks, %d list calls; want 3", got)
	}
	for _, name := range []string{"api", "dev"} {
		if st := stats(name); st.Execs != 1 {
			t.Errorf("%s: %d execs; want one look", name, st.Execs)
		}
	}
	if st := stats("web"); st.APICalls != 0 || st.Wakes != 0 {
		t.Errorf("web, asleep: %d API calls, %d wakes; want none", st.APICalls, st.Wakes)
	}
}
