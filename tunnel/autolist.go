package tunnel

import (
	"context"
	"time"
)

// startAutoListLocked starts the daemon's one list loop (see autoListLoop)
// with its first auto-forward sprite. Under d.mu, with d not closed.
func (d *Daemon) startAutoListLocked() {
	every := d.hooks.AutoListEvery
	if d.listing || every < 0 {
		return
	}
	if every == 0 {
		every = DefaultAutoListEvery
	}
	d.listing = true
	d.watchDone.Add(1)
	go d.autoListLoop(every)
}

// autoListLoop finds auto-forward sprites that run with no connection of
// ours: the user woke one (a console, sprite exec) and started a server
// there. Once per period it asks for the list of sprites, which wakes
// none, on behalf of every such sprite that nothing else looks at: one
// call (and its pages) per daemon, however many sprites have
// auto_forward on. A sprite the list shows running is then looked at once
// (lookOnce). The loop runs until the daemon shuts down.
func (d *Daemon) autoListLoop(every time.Duration) {
	defer d.watchDone.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-d.stopWatch:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.clock.After(every):
		}
		d.lookAtRunningSprites(ctx)
	}
}

func (d *Daemon) lookAtRunningSprites(ctx context.Context) {
	env := d.env.Load()
	now := d.clock.Now()
	d.mu.Lock()
	var want []*autoSprite
	for _, a := range d.autos {
		if a.wantsLook(now) {
			want = append(want, a)
		}
	}
	d.mu.Unlock()
	if len(want) == 0 || env == nil {
		return
	}
	// For one sprite, a prefix spares an organization's other pages.
	prefix := ""
	if len(want) == 1 {
		prefix = want[0].sprite
	}
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	list, err := env.client.List(lctx, prefix)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			d.log.Debug().Err(err).Msg("auto-forward: could not list sprites")
		}
		return
	}
	running := map[string]bool{}
	for _, s := range list {
		if s.Status == "running" {
			running[s.Name] = true
		}
	}
	for _, a := range want {
		if running[a.sprite] {
			a.lookOnce()
		}
	}
}
