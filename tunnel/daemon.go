// Package tunnel is spritefwd's engine: it listens on local ports and
// carries each connection to a port inside a sprite, waking the sprite,
// keeping live links pinged and failing honestly when a link breaks.
// Daemon applies configs as diffs, so an edit never disturbs forwards whose
// rules did not change.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/sprites"
)

// Options are a Daemon's dependencies. Only Log is commonly set.
type Options struct {
	Log       zerolog.Logger
	Clock     Clock                                                                 // default SystemClock
	Listen    func(ctx context.Context, network, addr string) (net.Listener, error) // default net.ListenConfig
	Getenv    func(string) string                                                   // default os.Getenv; for $SPRITES_TOKEN
	UserAgent string
	// OnLinkSetup, if set, is called with how long each successful link
	// took to set up, wake included. OnWake gets each wake's wait.
	OnLinkSetup func(forward string, setup time.Duration)
	OnWake      func(sprite string, waited time.Duration)
}

// linkEnv is what new links are made with. A reload swaps it atomically:
// links already open keep theirs.
type linkEnv struct {
	client    *sprites.Client
	keepalive time.Duration
	halfClose time.Duration
}

// Daemon runs the forwards of one config at a time.
type Daemon struct {
	log    zerolog.Logger
	clock  Clock
	listen func(ctx context.Context, network, addr string) (net.Listener, error)
	getenv func(string) string
	ua     string
	hooks  Options

	tokenSource, tokenWarning atomic.Pointer[string]

	env atomic.Pointer[linkEnv]

	mu       sync.Mutex
	cfg      *config.Config
	forwards map[string]*forward
	drainers map[*forward]struct{} // removed or replaced, still finishing
	wakers   map[string]*Waker
	draining sync.WaitGroup
	closed   bool
}

// New returns a Daemon with no forwards; call Apply.
func New(opts Options) *Daemon {
	d := &Daemon{
		log: opts.Log, clock: opts.Clock, listen: opts.Listen, getenv: opts.Getenv, ua: opts.UserAgent, hooks: opts,
		forwards: map[string]*forward{}, drainers: map[*forward]struct{}{}, wakers: map[string]*Waker{},
	}
	if d.clock == nil {
		d.clock = SystemClock{}
	}
	if d.listen == nil {
		var lc net.ListenConfig
		d.listen = lc.Listen
	}
	if d.getenv == nil {
		d.getenv = os.Getenv
	}
	if d.ua == "" {
		d.ua = "spritefwd"
	}
	return d
}

// Apply makes cfg the running config. It changes nothing unless the token
// loads and the client builds. Then, as a diff: forwards whose rule is the
// same keep their listeners and connections; removed and changed ones drain
// with the grace period; new and changed ones start. A forward that cannot
// bind is reported in Status and retried, without failing Apply.
func (d *Daemon) Apply(cfg *config.Config) error {
	tok, err := config.LoadToken(cfg.TokenFile, d.getenv)
	if err != nil {
		return err
	}
	if tok.Warning != "" {
		d.log.Warn().Msg(tok.Warning)
	}
	d.tokenSource.Store(&tok.Source)
	d.tokenWarning.Store(&tok.Warning)
	client, err := sprites.New(sprites.Options{
		APIURL: cfg.APIURL, Token: tok.Value(), UserAgent: d.ua, MaxMessage: cfg.MaxMessage,
		HandshakeTimeout: cfg.WakeTimeout,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.File, err)
	}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		client.Close()
		return errors.New("daemon is shut down")
	}
	old := d.env.Swap(&linkEnv{client: client, keepalive: cfg.Keepalive, halfClose: cfg.HalfCloseTimeout})
	want := map[string]config.Forward{}
	for _, r := range cfg.Forwards {
		want[r.Name] = r
	}
	var stopping []*forward
	for name, f := range d.forwards {
		if r, ok := want[name]; !ok || !r.Same(f.rule) {
			stopping = append(stopping, f)
			delete(d.forwards, name)
		}
	}
	for _, w := range d.wakers {
		w.SetWakeTimeout(cfg.WakeTimeout)
	}
	d.cfg = cfg
	d.mu.Unlock()

	// Old listeners must close before new ones bind: a changed rule may
	// keep its port. Their connections drain in the background.
	for _, f := range stopping {
		f.log.Info().Msg("forward removed or changed; draining")
		f.stopAccepting()
		d.mu.Lock()
		d.drainers[f] = struct{}{}
		d.mu.Unlock()
		d.draining.Add(1)
		go func() {
			defer d.draining.Done()
			f.drain(cfg.ShutdownGrace)
			d.mu.Lock()
			delete(d.drainers, f)
			d.mu.Unlock()
		}()
	}
	d.mu.Lock()
	for _, r := range cfg.Forwards {
		if _, ok := d.forwards[r.Name]; ok {
			continue
		}
		f := newForward(d, r, d.wakerLocked(r.Sprite, cfg.WakeTimeout))
		d.forwards[r.Name] = f
		f.start()
	}
	d.mu.Unlock()
	if len(cfg.Forwards) == 0 {
		d.log.Warn().Str("config", cfg.File).Msg("config has no forwards; add some under forwards:")
	}
	if old != nil {
		old.client.Close()
	}
	return nil
}

func (d *Daemon) wakerLocked(sprite string, wakeTimeout time.Duration) *Waker {
	w, ok := d.wakers[sprite]
	if !ok {
		w = NewWaker(sprite, d.clock, wakeTimeout)
		log := d.log.With().Str("sprite", sprite).Logger()
		w.OnWake = func(waited time.Duration, err error) {
			if err == nil {
				log.Info().Stringer("waited", waited.Round(time.Millisecond)).Msg("sprite awake")
				if d.hooks.OnWake != nil {
					d.hooks.OnWake(sprite, waited)
				}
			}
		}
		d.wakers[sprite] = w
	}
	return w
}

// Token reports where the running token came from, and any warning about
// its file's permissions. Never the token itself.
func (d *Daemon) Token() (source, warning string) {
	if p := d.tokenSource.Load(); p != nil {
		source = *p
	}
	if p := d.tokenWarning.Load(); p != nil {
		warning = *p
	}
	return source, warning
}

// Status lists every forward, sorted by name, draining ones included.
func (d *Daemon) Status() []Status {
	d.mu.Lock()
	fs := make([]*forward, 0, len(d.forwards))
	for _, f := range d.forwards {
		fs = append(fs, f)
	}
	for f := range d.drainers {
		fs = append(fs, f)
	}
	d.mu.Unlock()
	out := make([]Status, len(fs))
	for i, f := range fs {
		out[i] = f.status()
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].State != StateDraining // the live one first
	})
	return out
}

// Config returns the running config.
func (d *Daemon) Config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Shutdown stops accepting everywhere, gives open connections grace to
// finish, then closes them. It returns when everything has stopped.
func (d *Daemon) Shutdown(grace time.Duration) {
	d.mu.Lock()
	d.closed = true
	fs := make([]*forward, 0, len(d.forwards))
	for _, f := range d.forwards {
		fs = append(fs, f)
	}
	d.forwards = map[string]*forward{}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.drain(grace)
		}()
	}
	wg.Wait()
	d.draining.Wait()
	if env := d.env.Load(); env != nil {
		env.client.Close()
	}
}
