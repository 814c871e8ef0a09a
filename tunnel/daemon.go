// Package tunnel is spritefwd's engine: it listens on local ports and
// carries each connection to a port inside a sprite, waking the sprite,
// keeping live links pinged and failing honestly when a link breaks.
// Daemon applies configs as diffs, so an edit never disturbs forwards whose
// rules did not change.
package tunnel

import (
	"context"
	"crypto/x509"
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
	"github.com/spritefwd/spritefwd/mux"
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
	// AgentBinary finds a linux agent binary for arch ("amd64", "arm64")
	// when the config names none: a file next to the daemon, or the daemon
	// itself when it is that binary.
	AgentBinary func(arch string) (string, error)
	// MuxProbeAfter is how long a mux session may stay quiet before it is
	// pinged ahead of a new stream; zero means mux.ClientOptions' default.
	MuxProbeAfter time.Duration
	// NoListeners: Apply takes the config's settings, forwards' included,
	// but starts no listener. For a daemon in process that serves one
	// front's connection (spritefwd stdio without a running daemon).
	NoListeners bool
	// AutoListEvery is how often auto-forward checks the list of sprites
	// for one that runs with no connection of ours (zero: every
	// DefaultAutoListEvery; negative: never).
	AutoListEvery time.Duration
	// StateDir is where auto-forward keeps each sprite's discovered ports
	// (see config.DefaultStateDir); empty keeps nothing across restarts.
	StateDir string
}

// linkEnv is what new links are made with. A reload swaps it atomically:
// links already open keep theirs.
type linkEnv struct {
	client    *sprites.Client
	warm      *warmPools // the sprites' spare links, made with client
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

	// How every front reaches a sprite (see Transport).
	directT *directTransport
	muxT    *muxTransport

	exists existsCache // which sprites exist, for the SOCKS front

	mu       sync.Mutex
	cfg      *config.Config
	forwards map[string]*forward
	fronts   map[string]*forward   // rows of fronts without listeners, by name (see Carry)
	drainers map[*forward]struct{} // removed or replaced, still finishing
	wakers   map[string]*Waker
	agents   map[string]*agentPool   // by sprite, for mux forwards
	budget   *mux.Budget             // what the windows of every mux stream share
	retired  map[*agentPool]struct{} // replaced by a reload; closed when their streams end
	agentSet agentSettings
	autos    map[string]*autoSprite // by sprite, for auto_forward
	listing  bool                   // autoListLoop runs
	socks    *socksFront
	socksWG  sync.WaitGroup // SOCKS ports' Serve, current and replaced
	draining sync.WaitGroup
	closed   bool

	stopWatch chan struct{}
	stopOnce  sync.Once
	watchOnce sync.Once
	watchDone sync.WaitGroup
}

// New returns a Daemon with no forwards; call Apply.
func New(opts Options) *Daemon {
	d := &Daemon{
		log: opts.Log, clock: opts.Clock, listen: opts.Listen, getenv: opts.Getenv, ua: opts.UserAgent, hooks: opts,
		forwards: map[string]*forward{}, fronts: map[string]*forward{}, drainers: map[*forward]struct{}{}, wakers: map[string]*Waker{},
		agents: map[string]*agentPool{}, budget: mux.NewBudget(mux.DefaultBudget), retired: map[*agentPool]struct{}{}, stopWatch: make(chan struct{}),
		autos: map[string]*autoSprite{},
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
	d.directT = &directTransport{d: d, dial: d.dialLink}
	d.muxT = &muxTransport{d: d}
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
	users, err := socksUsers(cfg)
	if err != nil {
		return err
	}
	d.tokenSource.Store(&tok.Source)
	d.tokenWarning.Store(&tok.Warning)
	// The config holds the path, and each apply reads it: a reload then
	// picks up a renewed CA.
	var roots *x509.CertPool
	if cfg.CAFile != "" {
		if roots, err = config.LoadCA(cfg.CAFile); err != nil {
			return fmt.Errorf("%s: ca_file: %w", cfg.File, err)
		}
	}
	client, err := sprites.New(sprites.Options{
		APIURL: cfg.APIURL, Token: tok.Value(), UserAgent: d.ua, MaxMessage: cfg.MaxMessage,
		HandshakeTimeout: cfg.WakeTimeout, OnMessageLimit: d.logMessageLimit, Now: d.clock.Now,
		RootCAs: roots,
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
	// Running streams take the new limit as they next grow; a smaller one
	// takes nothing from them, and what they give back is not taken again
	// until they are under it.
	d.budget.SetLimit(cfg.MuxMemory)
	warm := newWarmPools(client, warmSettings{size: cfg.WarmLinks, linger: cfg.WarmLinger, ping: min(cfg.Keepalive, warmPing)}, d.log)
	old := d.env.Swap(&linkEnv{client: client, warm: warm, keepalive: cfg.Keepalive, halfClose: cfg.HalfCloseTimeout})
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
	used := map[string]bool{}
	for _, r := range cfg.Forwards {
		used[r.Sprite] = true
	}
	for _, f := range d.fronts {
		used[f.rule.Sprite] = true
	}
	for sprite, s := range cfg.Sprites {
		if s.Auto.On {
			used[sprite] = true
		}
	}
	for sprite, w := range d.wakers {
		if !used[sprite] {
			delete(d.wakers, sprite) // its draining forwards keep their pointer
			continue
		}
		w.SetWakeTimeout(cfg.WakeTimeout)
	}
	if set := settingsOf(cfg); set != d.agentSet || old == nil || old.keepalive != cfg.Keepalive {
		// New streams go to new pools; the old ones serve theirs, then close.
		for _, p := range d.agents {
			d.retireLocked(p)
		}
		d.agents, d.agentSet = map[string]*agentPool{}, set
	} else {
		for sprite, p := range d.agents {
			if !used[sprite] {
				d.retireLocked(p)
				delete(d.agents, sprite)
			}
		}
		for _, p := range d.agents {
			p.mu.Lock()
			p.fallback = nil // a reload tries a failed deploy again at once
			p.mu.Unlock()
		}
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
		if _, ok := d.forwards[r.Name]; ok || d.hooks.NoListeners {
			continue
		}
		f := newForward(d, r, d.wakerLocked(r.Sprite, cfg.WakeTimeout))
		d.forwards[r.Name] = f
		f.start()
	}
	d.mu.Unlock()
	if !d.hooks.NoListeners {
		d.applyAuto(cfg)
		d.applySOCKS(cfg, users)
	}
	if len(cfg.Forwards) == 0 && !d.hooks.NoListeners && cfg.SOCKS == "" && !hasAuto(cfg) {
		d.log.Warn().Str("config", cfg.File).Msg("config has no forwards; add some under forwards:")
	}
	if old != nil {
		old.warm.close()
		old.client.Close()
	}
	return nil
}

// logMessageLimit says what the client learned of a sprite's message limit.
// A reload makes a new client, which learns again: the service may have
// changed since.
func (d *Daemon) logMessageLimit(ev sprites.LimitEvent) {
	log := d.log.With().Str("sprite", ev.Sprite).Int("max_message", ev.Limit.Bytes).Logger()
	switch {
	case ev.Err != nil:
		log.Debug().Err(ev.Err).Msg("message size probe found out nothing; sending small messages until a later one does")
	case ev.Refused > 0:
		log.Warn().Msgf("the service refused a message of %d bytes on sprite %s; sending at most %d from now on", ev.Refused, ev.Sprite, ev.Limit.Bytes)
	case ev.Limit.State == sprites.LimitRefused:
		log.Info().Msgf("sprite %s reads at most %d bytes per message; sending at most that", ev.Sprite, ev.Limit.Bytes)
	default:
		log.Info().Msgf("sprite %s accepts messages of %d bytes", ev.Sprite, ev.Limit.Bytes)
	}
}

// retireLocked lets an agent pool that new connections no longer use close
// once its last stream ends, and forgets it then.
func (d *Daemon) retireLocked(p *agentPool) {
	d.retired[p] = struct{}{}
	p.client.CloseWhenIdle(func() {
		d.mu.Lock()
		delete(d.retired, p)
		d.mu.Unlock()
		p.log.Debug().Msg("agent pool replaced by a reload has no streams left; closed")
	})
}

// agent returns the sprite's agent pool, making it on first use.
func (d *Daemon) agent(sprite string, waker *Waker) *agentPool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.agents[sprite]
	if !ok {
		p = newAgentPool(d, sprite, d.agentSet, waker, d.env.Load().keepalive)
		d.agents[sprite] = p
		d.watchOnce.Do(func() {
			d.watchDone.Add(1)
			go d.watchSleep()
		})
	}
	return p
}

// watchSleep notices the machine waking from sleep: the wall clock jumps
// ahead of the monotonic one, which stops while the machine sleeps. Agent
// sessions are then probed at once, rather than found dead by a TCP
// timeout minutes later.
func (d *Daemon) watchSleep() {
	defer d.watchDone.Done()
	const every = time.Second
	t := time.NewTicker(every)
	defer t.Stop()
	prev := time.Now()
	for {
		select {
		case <-d.stopWatch:
			return
		case <-t.C:
		}
		now := time.Now()
		if jump := ClockJump(now.Sub(prev), now.Round(0).Sub(prev.Round(0))); jump > 0 {
			d.log.Info().Stringer("slept", jump.Round(time.Second)).Msg("the machine slept; probing agent sessions")
			d.mu.Lock()
			pools := make([]*agentPool, 0, len(d.agents))
			for _, p := range d.agents {
				pools = append(pools, p)
			}
			d.mu.Unlock()
			for _, p := range pools {
				go p.client.Probe()
			}
		}
		prev = now
	}
}

// ClockJump reports how far the wall clock ran ahead of the monotonic clock
// over an interval, if by more than a few seconds: the machine slept in
// between (the monotonic clock stops in suspend), or the clock was set
// forward. Take both from time.Now: now.Sub(prev) is monotonic, and
// now.Round(0).Sub(prev.Round(0)) is wall time.
func ClockJump(mono, wall time.Duration) time.Duration {
	if jump := wall - mono; jump > 3*time.Second {
		return jump
	}
	return 0
}

// waker returns the sprite's waker, making it on first use.
func (d *Daemon) waker(sprite string) *Waker {
	d.mu.Lock()
	defer d.mu.Unlock()
	wake := config.DefaultWakeTimeout
	if d.cfg != nil {
		wake = d.cfg.WakeTimeout
	}
	return d.wakerLocked(sprite, wake)
}

// agentStatus is the status of the sprite's agent pool, idle if it has
// none.
func (d *Daemon) agentStatus(sprite string) AgentStatus {
	d.mu.Lock()
	p := d.agents[sprite]
	d.mu.Unlock()
	if p == nil {
		return AgentStatus{State: "idle"}
	}
	return p.status()
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
	for _, f := range d.fronts {
		fs = append(fs, f)
	}
	for f := range d.drainers {
		fs = append(fs, f)
	}
	autos := make([]*autoSprite, 0, len(d.autos))
	for _, a := range d.autos {
		autos = append(autos, a)
	}
	d.mu.Unlock()
	for _, a := range autos {
		fs = append(fs, a.forwards()...)
	}
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

// MuxWindows is what the windows of every mux stream hold together
// beyond their first mux.StartWindow each, and mux_memory, which bounds it.
func (d *Daemon) MuxWindows() (used, limit int64) {
	return d.budget.Used(), d.budget.Limit()
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
	d.mu.Unlock()
	d.stopSOCKS()
	d.mu.Lock()
	fs := make([]*forward, 0, len(d.forwards))
	for _, f := range d.forwards {
		fs = append(fs, f)
	}
	for _, f := range d.fronts {
		fs = append(fs, f)
	}
	d.forwards, d.fronts = map[string]*forward{}, map[string]*forward{}
	autos := d.autos
	d.autos = map[string]*autoSprite{}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range autos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.close(grace, true)
		}()
	}
	for _, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.drain(grace)
		}()
	}
	wg.Wait()
	d.draining.Wait()
	d.socksWG.Wait() // the connections the SOCKS port was opening, which the drain ended
	d.mu.Lock()
	var pools []*agentPool
	for p := range d.retired {
		pools = append(pools, p)
	}
	for _, p := range d.agents {
		pools = append(pools, p)
	}
	d.agents, d.retired = map[string]*agentPool{}, map[*agentPool]struct{}{}
	d.mu.Unlock()
	for _, p := range pools {
		p.client.Close()
		p.preparing.Wait() // a gzip of the agent may still be running
	}
	d.stopOnce.Do(func() { close(d.stopWatch) })
	d.watchDone.Wait()
	if env := d.env.Load(); env != nil {
		env.warm.close()
		env.client.Close()
	}
}
