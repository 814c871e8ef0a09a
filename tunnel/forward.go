package tunnel

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/sock"
	"github.com/spritefwd/spritefwd/sprites"
)

// Forward states, as shown by status.
const (
	StateListening = "listening"
	StateFailed    = "failed"
	StateDraining  = "draining"
)

var errTooManyConnections = errors.New("max_connections reached")

// forward accepts local connections for one rule and carries each over its
// own proxy link. It owns its listeners and connections: drain closes them.
type forward struct {
	rule  config.Forward
	d     *Daemon
	waker *Waker
	stats *Stats
	log   zerolog.Logger

	ctx     context.Context // cancelled to abort every connection
	cancel  context.CancelFunc
	wg      sync.WaitGroup // keep-awake and rebind loops, which end on cancel
	accepts sync.WaitGroup // accept loops, which end when listeners close
	conns   sync.WaitGroup // open connections, which drain waits for

	mu        sync.Mutex
	listeners []net.Listener
	state     string
	bindErr   error
	lastWarn  map[string]time.Time // per failure message, to log each once per interval
	muted     map[string]int
	lingerers *list.List // of *lingerer, oldest first

	transport Transport
	// discovered is set on auto-forwards: shown in status.
	discovered atomic.Pointer[Discovered]
}

func newForward(d *Daemon, rule config.Forward, waker *Waker) *forward {
	ctx, cancel := context.WithCancel(context.Background())
	return &forward{
		rule: rule, d: d, waker: waker, stats: &Stats{}, ctx: ctx, cancel: cancel,
		log:      d.log.With().Str("forward", rule.Name).Str("sprite", rule.Sprite).Int("port", rule.Port).Logger(),
		lastWarn: map[string]time.Time{}, muted: map[string]int{}, lingerers: list.New(),
		transport: d.transportFor(rule.Mode),
	}
}

// A lingerer is a direct-mode connection whose client has closed its side
// (or closed outright: a proxy link cannot tell which), waiting out the
// sprite's last bytes. Lingerers count against max_connections, and the
// oldest yields to a new connection when the limit is reached: its client
// said it was done, and a short-lived client (pgbench -C, a browser) must
// not be refused because of the connections it has already closed.
type lingerer struct {
	evict func()
}

// admit decides whether a new connection fits under max_connections,
// evicting the oldest lingerer if that makes room.
func (f *forward) admit() bool {
	if f.stats.Open.Load()+f.stats.Lingering.Load() < int64(f.rule.MaxConnections) {
		return true
	}
	f.mu.Lock()
	front := f.lingerers.Front()
	if front != nil {
		f.lingerers.Remove(front)
	}
	f.mu.Unlock()
	if front == nil {
		return false
	}
	f.stats.Evicted.Add(1)
	front.Value.(*lingerer).evict()
	return true
}

// bindAddrs expands a listen address: localhost means both loopbacks.
func bindAddrs(listen string) []string {
	host, port, _ := net.SplitHostPort(listen)
	if host == "localhost" {
		return []string{net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port)}
	}
	return []string{listen}
}

// ipv6Unavailable reports a bind failure that means "this machine has no
// IPv6", which must not fail a localhost forward.
func ipv6Unavailable(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EPROTONOSUPPORT)
}

// bind opens the forward's listeners. On failure nothing stays open.
func (f *forward) bind() error {
	var lns []net.Listener
	addrs := bindAddrs(f.rule.Listen)
	for i, addr := range addrs {
		if i > 0 && len(lns) > 0 {
			// localhost:0 means one free port on both loopbacks, not two.
			host, _, _ := net.SplitHostPort(addr)
			_, port, _ := net.SplitHostPort(lns[0].Addr().String())
			addr = net.JoinHostPort(host, port)
		}
		ln, err := f.d.listen(f.ctx, "tcp", addr)
		if err != nil {
			if i > 0 && ipv6Unavailable(err) {
				f.log.Debug().Str("addr", addr).Err(err).Msg("no IPv6 loopback; listening on 127.0.0.1 only")
				continue
			}
			for _, l := range lns {
				l.Close()
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("forward %s: listen %s: port already in use; stop the other program or pick another local port: %w", f.rule.Name, addr, err)
			}
			return fmt.Errorf("forward %s: listen %s: %w", f.rule.Name, addr, err)
		}
		lns = append(lns, ln)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == StateDraining {
		for _, l := range lns {
			l.Close()
		}
		return nil
	}
	f.listeners, f.state, f.bindErr = lns, StateListening, nil
	for _, ln := range lns {
		f.accepts.Add(1)
		go f.accept(ln)
	}
	return nil
}

// start binds, or keeps retrying in the background if the port is taken,
// so one forward's conflict never blocks the others.
func (f *forward) start() {
	err := f.bind()
	if err == nil {
		f.log.Info().Strs("addrs", f.addrs()).Str("target", f.rule.Target()).Msg("forward listening")
	} else {
		f.mu.Lock()
		f.state, f.bindErr = StateFailed, err
		f.mu.Unlock()
		f.stats.recordError(ClassOther, err, f.d.clock.Now())
		f.log.Error().Err(err).Msg("forward failed to listen; retrying every 5s")
		f.wg.Add(1)
		go f.rebind()
	}
	if f.rule.KeepAwake == config.Always {
		f.wg.Add(1)
		go f.keepAwake()
	}
}

func (f *forward) rebind() {
	defer f.wg.Done()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.d.clock.After(5 * time.Second):
		}
		f.mu.Lock()
		draining := f.state == StateDraining
		f.mu.Unlock()
		if draining {
			return
		}
		if err := f.bind(); err == nil {
			f.log.Info().Str("listen", f.rule.Listen).Msg("forward listening after retry")
			return
		}
	}
}

// keepAwake touches the sprite through the API for keep_awake: always, even
// with no connections open. Any API call counts as activity.
func (f *forward) keepAwake() {
	defer f.wg.Done()
	for {
		env := f.d.env.Load()
		select {
		case <-f.ctx.Done():
			return
		case <-f.d.clock.After(env.keepalive):
		}
		ctx, cancel := context.WithTimeout(f.ctx, env.keepalive)
		s, err := env.client.Get(ctx, f.rule.Sprite)
		cancel()
		if err != nil && f.ctx.Err() == nil {
			f.warn(err, "keep_awake: could not reach the sprite")
			continue
		}
		if err == nil && s.Status != string(StateRunning) {
			f.log.Info().Str("was", s.Status).Msg("keep_awake woke the sprite")
		}
	}
}

func (f *forward) accept(ln net.Listener) {
	defer f.accepts.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || f.ctx.Err() != nil {
				return
			}
			// EMFILE and friends: back off instead of spinning.
			f.warn(err, "accept failed")
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if !f.admit() {
			err := fmt.Errorf("forward %s: %w (%d); new connections are refused until some close", f.rule.Name, errTooManyConnections, f.rule.MaxConnections)
			f.stats.recordError(ClassLimit, err, f.d.clock.Now())
			f.warn(err, "connection refused")
			sock.Reset(c)
			continue
		}
		f.stats.Open.Add(1)
		f.stats.Total.Add(1)
		f.conns.Add(1)
		go f.handle(c)
	}
}

// target is where the forward's connections go.
func (f *forward) target() Target {
	return Target{Front: f.rule.Name, Sprite: f.rule.Sprite, Host: f.rule.Host, Port: f.rule.Port, Mode: f.rule.Mode, KeepAwake: f.rule.KeepAwake}
}

// handle carries one accepted client connection.
func (f *forward) handle(c net.Conn) { f.serve(c, nil, nil) }

// serve carries one client connection through the forward's transport.
// It is the one place that accounts for a connection: its caller counted
// it open; it stays open until its client closes its side, then only
// lingers (see lingerer), and its end is logged and counted here. opened,
// if set, is called with nil once the connection is open, or with why it
// could not be (what to fix); done, if set, once it has ended, with nil
// for a clean end.
func (f *forward) serve(c net.Conn, opened, done func(error)) {
	log := f.log.With().Str("client", c.RemoteAddr().String()).Logger()
	var (
		lingering, evicted atomic.Bool
		linger             *list.Element
	)
	closeOpen := func() {
		if f.stats.Open.Add(-1) == 0 {
			f.waker.MarkIdle()
		}
	}
	finish := func() {
		if lingering.Load() {
			f.mu.Lock()
			f.lingerers.Remove(linger) // a no-op once evicted
			f.mu.Unlock()
			f.stats.Lingering.Add(-1)
		} else {
			closeOpen()
		}
		f.conns.Done()
	}
	start := f.d.clock.Now()
	var auto autoLink // this connection's part in direct-mode discovery
	h := Hooks{
		Confirm: opened != nil,
		Up:      &f.stats.BytesIn, Down: &f.stats.BytesOut,
		WarmHits: &f.stats.WarmHits, WarmMisses: &f.stats.WarmMisses, WarmFallbacks: &f.stats.WarmFallbacks,
		OnUp: func(target string) {
			setup := f.d.clock.Now().Sub(start)
			log.Debug().Stringer("setup", setup.Round(time.Microsecond)).Str("target", target).Msg("link up")
			if f.d.hooks.OnLinkSetup != nil {
				f.d.hooks.OnLinkSetup(f.rule.Name, setup)
			}
			auto.up(f.d.autoFor(f.rule.Sprite))
		},
		OnResume: f.stats.recordResume,
		// The client said it was done: the connection no longer keeps the
		// sprite awake, and yields its place under max_connections to a
		// new one.
		OnClientDone: func(evict func()) {
			f.mu.Lock()
			linger = f.lingerers.PushBack(&lingerer{evict: func() {
				log.Debug().Msg("lingering connection reset to make room under max_connections")
				evicted.Store(true)
				evict()
			}})
			f.mu.Unlock()
			lingering.Store(true)
			closeOpen() // before Lingering counts it, so admit never sees it twice
			f.stats.Lingering.Add(1)
		},
		OnFallback: func(err error) {
			f.stats.recordError(ClassOther, err, f.d.clock.Now())
			f.log.Warn().Err(err).Stringer("retry_in", fallbackRetry).Msg("agent unavailable; this sprite's mux forwards use direct mode for now")
		},
		OnEnd: func(res Result) {
			auto.down()
			if !evicted.Load() { // made room for a new connection: counted as lingering_evicted
				f.ended(res, log)
			}
			finish()
			if done != nil {
				done(f.endError(res))
			}
		},
	}
	if err := f.transport.Open(f.ctx, f.target(), sock.WithoutHalfClose(c), h); err != nil {
		// Log before the reset, so that whoever sees the reset can find
		// the reason already written.
		if f.ctx.Err() == nil {
			f.stats.recordError(ErrorClass(err), err, f.d.clock.Now())
			f.warn(err, advice(f.rule, err))
		}
		sock.Reset(c)
		finish()
		if opened != nil {
			opened(fmt.Errorf("%w: %s", err, advice(f.rule, err)))
		}
		return
	}
	if opened != nil {
		opened(nil)
	}
}

// endError is how a connection's end looks to a front that reports it
// (stdio exits non-zero on it): nil only for a clean end.
func (f *forward) endError(res Result) error {
	if res.End == EndClean {
		return nil
	}
	err := res.Err
	if err == nil {
		err = errors.New(res.End.String())
	}
	var setupErr *SetupError
	if errors.Is(err, ErrNothingListening) || errors.As(err, &setupErr) {
		return fmt.Errorf("%w: %s", err, advice(f.rule, err))
	}
	return fmt.Errorf("sprite %s port %d: %s: %w", f.rule.Sprite, f.rule.Port, res.End, err)
}

// ended logs and counts how a connection ended.
func (f *forward) ended(res Result, log zerolog.Logger) {
	now := f.d.clock.Now()
	var setupErr *SetupError
	switch {
	case errors.As(res.Err, &setupErr):
		// Begun on a spare, the connection relayed before its link was up;
		// it failed as a connect does, and is reported as one.
		if f.ctx.Err() == nil {
			f.stats.recordError(ErrorClass(setupErr.Err), setupErr.Err, now)
			f.warn(setupErr.Err, advice(f.rule, setupErr.Err))
		}
	case res.End == EndLinkBroken && errors.Is(res.Err, ErrLinkDead):
		err := fmt.Errorf("forward %s: sprite %s: %w", f.rule.Name, f.rule.Sprite, ErrLinkDead)
		f.stats.recordError(ClassPingTimeout, err, now)
		log.Warn().Err(err).Msg("link dead; client reset after the data that arrived")
	case res.End == EndLinkBroken && errors.Is(res.Err, sprites.ErrMessageTooBig):
		// The client already logged the new size; this says who paid.
		err := fmt.Errorf("forward %s: %w", f.rule.Name, res.Err)
		f.stats.recordError(ClassTooBig, err, now)
		log.Warn().Err(err).Msg("link closed by the service over a message's size; client reset after the data that arrived")
	case f.ctx.Err() != nil:
		log.Debug().Str("end", res.End.String()).Msg("connection closed as the forward stopped")
	case errors.Is(res.Err, ErrNothingListening):
		err := fmt.Errorf("forward %s: %w", f.rule.Name, res.Err)
		f.stats.recordError(ClassRefused, err, now)
		f.warn(err, advice(f.rule, err))
	case res.End == EndLinkBroken:
		err := fmt.Errorf("forward %s: sprite %s: %w", f.rule.Name, f.rule.Sprite, res.Err)
		f.stats.recordError(ClassLinkBroken, err, now)
		ev := log.Info()
		if res.ClientClosed {
			ev = log.Debug() // the client was done sending; usually it had its reply
		}
		ev.Err(res.Err).Msg("link broken (sprite slept, network dropped, or a stream could not be resumed); client reset after the data that arrived")
	default:
		log.Debug().Err(res.Err).Str("end", res.End.String()).Msg("connection closed")
	}
}

// advice is the log message for a failed connection: what to fix.
func advice(rule config.Forward, err error) string {
	if rule.Listen == FrontStdio || rule.Listen == FrontSOCKS {
		switch ErrorClass(err) {
		case ClassNotFound:
			return fmt.Sprintf("sprite %s does not exist; check the name", rule.Sprite)
		case ClassRefused:
			return fmt.Sprintf("nothing listens on sprite %s port %d; start the server inside the sprite or check the port", rule.Sprite, rule.Port)
		case ClassBadRequest:
			return fmt.Sprintf("sprite %s: the API rejected the request; check the name and port", rule.Sprite)
		}
	}
	switch ErrorClass(err) {
	case ClassAuth:
		return fmt.Sprintf("sprite %s: token rejected; check token_file or $SPRITES_TOKEN", rule.Sprite)
	case ClassNotFound:
		return fmt.Sprintf("sprite %s does not exist; check sprite: in forward %s", rule.Sprite, rule.Name)
	case ClassRefused:
		return fmt.Sprintf("nothing listens on sprite %s port %d; start the server inside the sprite or fix port:", rule.Sprite, rule.Port)
	case ClassWakeTimeout:
		return fmt.Sprintf("sprite %s did not wake in time; raise wake_timeout if it is slow to start", rule.Sprite)
	case ClassTLS:
		return fmt.Sprintf("sprite %s: the API's TLS certificate is not trusted; check api_url and the system's CA certificates", rule.Sprite)
	case ClassBadRequest:
		return fmt.Sprintf("sprite %s: the API rejected the request; check host: and port: in forward %s", rule.Sprite, rule.Name)
	}
	return fmt.Sprintf("sprite %s: connection failed", rule.Sprite)
}

// warnInterval bounds repeats of one failure in the log: a storm of
// connections against a bad token logs one line, plus a count.
const warnInterval = 10 * time.Second

func (f *forward) warn(err error, msg string) {
	now := f.d.clock.Now()
	key := msg + err.Error()
	f.mu.Lock()
	if last, ok := f.lastWarn[key]; ok && now.Sub(last) < warnInterval {
		f.muted[key]++
		f.mu.Unlock()
		return
	}
	muted := f.muted[key]
	f.lastWarn[key], f.muted[key] = now, 0
	if len(f.lastWarn) > 100 {
		clear(f.lastWarn)
	}
	f.mu.Unlock()
	ev := f.log.Warn().Err(err)
	if muted > 0 {
		ev = ev.Int("repeated", muted)
	}
	ev.Msg(msg)
}

// stopAccepting closes the listeners; open connections carry on.
func (f *forward) stopAccepting() {
	f.mu.Lock()
	f.state = StateDraining
	lns := f.listeners
	f.listeners = nil
	f.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
}

// drain stops accepting at once and gives open connections grace to
// finish; then it aborts them. It returns when everything has stopped.
func (f *forward) drain(grace time.Duration) {
	f.stopAccepting()
	f.accepts.Wait() // no connection can be added now
	done := make(chan struct{})
	go func() {
		f.conns.Wait()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		f.log.Warn().Int64("open", f.stats.Open.Load()).Stringer("grace", grace).Msg("closing connections still open after the grace period")
	}
	f.cancel()
	<-done
	f.wg.Wait()
}

// Status is one forward's row in `spritefwd status`.
type Status struct {
	Name        string       `json:"name"`
	Listen      string       `json:"listen"`
	Addrs       []string     `json:"addrs,omitempty"` // where it really listens; differs for port 0
	Target      string       `json:"target"`
	State       string       `json:"state"`
	BindError   string       `json:"bind_error,omitempty"`
	SpriteState SpriteState  `json:"sprite_state"`
	LastWake    time.Time    `json:"last_wake,omitzero"`
	Mode        config.Mode  `json:"mode"`
	Agent       *AgentStatus `json:"agent,omitempty"` // mux mode
	// MaxMessage is what is known of the sprite's message limit.
	MaxMessage sprites.MessageLimit `json:"max_message"`
	// WarmLinks is how many spare links the sprite holds now (direct mode).
	WarmLinks int `json:"warm_links"`
	// Discovered is set on the forwards that auto_forward made.
	Discovered *Discovered `json:"discovered,omitempty"`
	StatsSnapshot
}

// addrs are where the forward listens.
func (f *forward) addrs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, ln := range f.listeners {
		out = append(out, ln.Addr().String())
	}
	return out
}

func (f *forward) status() Status {
	f.mu.Lock()
	st := Status{Name: f.rule.Name, Listen: f.rule.Listen, Target: f.rule.Target(), State: f.state, Mode: f.rule.Mode}
	if f.bindErr != nil {
		st.BindError = f.bindErr.Error()
	}
	f.mu.Unlock()
	st.Addrs = f.addrs()
	st.Discovered = f.discovered.Load()
	st.SpriteState, st.LastWake = f.waker.State()
	st.StatsSnapshot = f.stats.Snapshot()
	st.Wakes, st.WakeWait = f.waker.Wakes()
	env := f.d.env.Load()
	st.MaxMessage = env.client.MessageLimit(f.rule.Sprite)
	if f.rule.Mode == config.Direct {
		st.WarmLinks = env.warm.count(f.rule.Sprite)
	}
	if f.rule.Mode == config.Mux {
		as := f.d.agentStatus(f.rule.Sprite)
		st.Agent = &as
	}
	return st
}
