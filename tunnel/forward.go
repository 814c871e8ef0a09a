package tunnel

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/mux"
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
	streams   map[*mux.Stream]net.Conn // mux mode: open streams and their clients, reset on forced drain
	lingerers *list.List               // of *lingerer, oldest first

	pool atomic.Pointer[agentPool] // mux mode: the sprite's agent, once used
}

func newForward(d *Daemon, rule config.Forward, waker *Waker) *forward {
	ctx, cancel := context.WithCancel(context.Background())
	return &forward{
		rule: rule, d: d, waker: waker, stats: &Stats{}, ctx: ctx, cancel: cancel,
		log:      d.log.With().Str("forward", rule.Name).Str("sprite", rule.Sprite).Int("port", rule.Port).Logger(),
		lastWarn: map[string]time.Time{}, muted: map[string]int{}, lingerers: list.New(),
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
		f.log.Info().Strs("addrs", f.status().Addrs).Str("target", f.rule.Target()).Msg("forward listening")
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
			mux.Reset(c)
			continue
		}
		f.stats.Open.Add(1)
		f.stats.Total.Add(1)
		f.conns.Add(1)
		go f.handle(c)
	}
}

// handle carries one client connection: on a stream to the sprite's agent
// in mux mode, or else on its own proxy link.
func (f *forward) handle(c net.Conn) {
	if f.rule.Mode == config.Mux && f.handleMux(c) {
		return
	}
	f.handleDirect(c)
}

// handleMux opens a stream for c. It returns false when the agent is
// unavailable and c should go direct; otherwise c is taken care of, and the
// stream's end does the accounting that handleDirect does on return.
func (f *forward) handleMux(c net.Conn) bool {
	p := f.d.agent(f.rule.Sprite, f.waker)
	f.pool.Store(p)
	if p.usable() != nil {
		return false
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	start := f.d.clock.Now()
	so := mux.StreamOptions{
		DrainTimeout: 5 * time.Second, Up: &f.stats.BytesIn, Down: &f.stats.BytesOut,
		OnResume: func(took time.Duration) { f.stats.recordResume(took) },
		OnEnd: func(s *mux.Stream) {
			f.streamEnded(s)
			f.mu.Lock()
			delete(f.streams, s)
			f.mu.Unlock()
			if f.stats.Open.Add(-1) == 0 {
				f.waker.MarkIdle()
			}
			f.conns.Done()
		},
	}
	st, err := p.client.Open(f.ctx, tc, f.rule.Host, f.rule.Port, f.rule.KeepAwake != config.Never, so)
	if errors.Is(err, mux.ErrClientClosed) && f.ctx.Err() == nil {
		// A reload retired the pool between the lookup and the open; its
		// successor takes the stream.
		p = f.d.agent(f.rule.Sprite, f.waker)
		f.pool.Store(p)
		st, err = p.client.Open(f.ctx, tc, f.rule.Host, f.rule.Port, f.rule.KeepAwake != config.Never, so)
	}
	var de *deployError
	if errors.As(err, &de) {
		if p.fail(err) {
			f.stats.recordError(ClassOther, err, f.d.clock.Now())
			f.log.Warn().Err(err).Stringer("retry_in", fallbackRetry).Msg("agent unavailable; this sprite's mux forwards use direct mode for now")
		}
		return false
	}
	if err != nil {
		if f.ctx.Err() == nil {
			err = fmt.Errorf("forward %s: sprite %s: %w", f.rule.Name, f.rule.Sprite, err)
			f.stats.recordError(ErrorClass(err), err, f.d.clock.Now())
			f.warn(err, advice(f.rule, err))
		}
		mux.Reset(c)
		if f.stats.Open.Add(-1) == 0 {
			f.waker.MarkIdle()
		}
		f.conns.Done()
		return true
	}
	setup := f.d.clock.Now().Sub(start)
	if f.d.hooks.OnLinkSetup != nil {
		f.d.hooks.OnLinkSetup(f.rule.Name, setup)
	}
	f.mu.Lock()
	if f.streams == nil {
		f.streams = map[*mux.Stream]net.Conn{}
		// Forced down after the grace: reset what is still open, the
		// clients at once, since a client that does not read would hold
		// its stream's drain.
		context.AfterFunc(f.ctx, func() {
			f.mu.Lock()
			all := make([]*mux.Stream, 0, len(f.streams))
			for s, c := range f.streams {
				mux.Reset(c)
				all = append(all, s)
			}
			f.mu.Unlock()
			mux.ResetAll(all, errors.New("forward stopped"))
		})
	}
	select {
	case <-st.Done():
	default:
		if f.ctx.Err() != nil {
			// Opened after the forced drain took its snapshot: nothing
			// else would reset it.
			f.mu.Unlock()
			mux.Reset(tc)
			st.Reset(errors.New("forward stopped"))
			return true
		}
		f.streams[st] = tc
	}
	f.mu.Unlock()
	return true
}

// streamEnded logs and counts how a mux stream ended.
func (f *forward) streamEnded(s *mux.Stream) {
	err := s.Err()
	if err == nil || f.ctx.Err() != nil {
		return
	}
	now := f.d.clock.Now()
	switch {
	case errors.Is(err, mux.ErrPeerReset) && strings.Contains(err.Error(), "connection refused"):
		err = fmt.Errorf("forward %s: %w: %w", f.rule.Name, ErrNothingListening, err)
		f.stats.recordError(ClassRefused, err, now)
		f.warn(err, advice(f.rule, err))
	case errors.Is(err, mux.ErrPeerReset), errors.Is(err, mux.ErrLocalAborted):
		f.log.Debug().Err(err).Msg("stream reset")
	default: // resume window expired, agent restarted
		err = fmt.Errorf("forward %s: sprite %s: %w", f.rule.Name, f.rule.Sprite, err)
		f.stats.recordError(ClassLinkBroken, err, now)
		f.log.Info().Err(err).Msg("stream could not be resumed; client reset after the data that arrived")
	}
}

// handleDirect carries one client connection on its own proxy link. It
// does not read from the client until the link is up, so the client's
// first bytes wait in its socket.
func (f *forward) handleDirect(c net.Conn) {
	defer f.conns.Done()
	// A connection counts as open until its client closes its side. After
	// that it only lingers, waiting out the sprite's last bytes (a proxy
	// link cannot say when the server inside closed): it no longer keeps
	// the sprite awake, and it yields its place under max_connections to a
	// new connection (see lingerer).
	var lingering, evicted atomic.Bool
	var linger *list.Element
	closeOpen := func() {
		if f.stats.Open.Add(-1) == 0 {
			f.waker.MarkIdle()
		}
	}
	defer func() {
		if lingering.Load() {
			f.mu.Lock()
			f.lingerers.Remove(linger) // a no-op once evicted
			f.mu.Unlock()
			f.stats.Lingering.Add(-1)
		} else {
			closeOpen()
		}
	}()
	env := f.d.env.Load()
	log := f.log.With().Str("client", c.RemoteAddr().String()).Logger()
	start := f.d.clock.Now()
	linkUp := func(link directLink) {
		setup := f.d.clock.Now().Sub(start)
		log.Debug().Stringer("setup", setup.Round(time.Microsecond)).Str("target", link.Target()).Msg("link up")
		if f.d.hooks.OnLinkSetup != nil {
			f.d.hooks.OnLinkSetup(f.rule.Name, setup)
		}
	}
	connect := func(ctx context.Context) (directLink, error) {
		l, err := Connect(ctx, f.waker, f.rule.Port, func(ctx context.Context) (*sprites.Link, error) {
			return env.client.Dial(ctx, f.rule.Sprite, f.rule.Host, f.rule.Port)
		})
		if err != nil {
			return nil, err
		}
		return l, nil
	}
	var pool *warmPool
	if f.rule.KeepAwake != config.Never {
		// Pinged spares keep a sprite awake, which keep_awake: never forbids.
		pool = env.warm.get(f.rule.Sprite)
	}
	if pool != nil {
		pool.acquire()
		defer pool.release()
	}
	link := f.startOnSpare(pool, connect, func(how warmOutcome, l directLink) {
		if how == warmHit {
			f.waker.connected()
		}
		pool.connected()
		linkUp(l)
	})
	if link == nil {
		l, err := connect(f.ctx)
		if err != nil {
			// Log before the reset, so that whoever sees the reset can find
			// the reason already written.
			if f.ctx.Err() == nil {
				f.stats.recordError(ErrorClass(err), err, f.d.clock.Now())
				f.warn(err, advice(f.rule, err))
			}
			mux.Reset(c)
			return
		}
		if pool != nil {
			pool.connected()
		}
		linkUp(l)
		link = l
	}

	local, ok := c.(Local)
	if !ok {
		local = noHalfClose{c}
	}
	var busy atomic.Bool
	kctx, stopPings := context.WithCancel(f.ctx)
	ka := &Keepalive{Pinger: link, Interval: env.keepalive, Clock: f.d.clock, Busy: &busy}
	opts := RelayOptions{
		HalfCloseTimeout: env.halfClose, DrainTimeout: 5 * time.Second,
		Up: &f.stats.BytesIn, Down: &f.stats.BytesOut, Busy: &busy,
		OnClientDone: func() {
			f.mu.Lock()
			linger = f.lingerers.PushBack(&lingerer{evict: func() {
				log.Debug().Msg("lingering connection reset to make room under max_connections")
				evicted.Store(true)
				link.CloseNow()
				mux.Reset(c)
			}})
			f.mu.Unlock()
			lingering.Store(true)
			closeOpen() // before Lingering counts it, so admit never sees it twice
			f.stats.Lingering.Add(1)
		},
	}
	if f.rule.KeepAwake != config.Never {
		ticker := time.NewTicker(env.keepalive)
		defer ticker.Stop()
		opts.Tick = ticker.C
		opts.OnTick = func() error {
			if lingering.Load() {
				return nil // the client is gone: let the sprite sleep
			}
			return ka.Tick(kctx)
		}
	}
	// Forced down after its grace, the forward resets the client at once:
	// closing the link alone would not end a write to a client that has
	// stopped reading.
	stopAbort := context.AfterFunc(f.ctx, func() {
		link.CloseNow()
		mux.Reset(c)
	})
	res := Relay(local, link, opts)
	stopAbort()
	stopPings()
	ka.Wait()
	var setupErr *SetupError
	switch {
	case evicted.Load():
		// Made room for a new connection: counted as lingering_evicted.
	case errors.As(res.Err, &setupErr):
		// Begun on a spare, the connection relayed before its link was up;
		// it failed as a connect does, and is reported as one.
		if f.ctx.Err() == nil {
			f.stats.recordError(ErrorClass(setupErr.Err), setupErr.Err, f.d.clock.Now())
			f.warn(setupErr.Err, advice(f.rule, setupErr.Err))
		}
	case res.End == EndLinkBroken && errors.Is(res.Err, ErrLinkDead):
		err := fmt.Errorf("forward %s: sprite %s: %w", f.rule.Name, f.rule.Sprite, ErrLinkDead)
		f.stats.recordError(ClassPingTimeout, err, f.d.clock.Now())
		log.Warn().Err(err).Msg("link dead; client reset after the data that arrived")
	case res.End == EndLinkBroken && errors.Is(res.Err, sprites.ErrMessageTooBig):
		// The client already logged the new size; this says who paid.
		err := fmt.Errorf("forward %s: %w", f.rule.Name, res.Err)
		f.stats.recordError(ClassTooBig, err, f.d.clock.Now())
		log.Warn().Err(err).Msg("link closed by the service over a message's size; client reset after the data that arrived")
	case res.End == EndLinkBroken && f.ctx.Err() == nil:
		err := fmt.Errorf("forward %s: sprite %s: link broken: %w", f.rule.Name, f.rule.Sprite, res.Err)
		f.stats.recordError(ClassLinkBroken, err, f.d.clock.Now())
		ev := log.Info()
		if res.ClientClosed {
			ev = log.Debug() // the client was done sending; usually it had its reply
		}
		ev.Err(res.Err).Msg("link broken (sprite slept or network dropped); client reset after the data that arrived")
	default:
		log.Debug().Str("end", res.End.String()).Msg("connection closed")
	}
}

// startOnSpare begins the connection on one of the sprite's spare links,
// if the pool has one that answered lately: the init goes out now and the
// client's bytes follow it, and connect races it if "connected" is late.
// up is called once a link is up, with how. It returns nil on a miss.
func (f *forward) startOnSpare(pool *warmPool, connect func(context.Context) (directLink, error), up func(warmOutcome, directLink)) directLink {
	if pool == nil {
		return nil
	}
	sp := pool.take()
	if sp == nil {
		f.stats.WarmMisses.Add(1)
		return nil
	}
	first, err := sp.Start(f.rule.Host, f.rule.Port)
	if err != nil {
		f.stats.WarmMisses.Add(1) // it died as it was taken
		return nil
	}
	return startWarm(f.ctx, first, pool.fallbackAfter(), connect, func(how warmOutcome, l directLink, err error) {
		if f.ctx.Err() != nil {
			return // shut down or drained: not the spare's doing
		}
		switch how {
		case warmHit:
			f.stats.WarmHits.Add(1)
		case warmFallback:
			f.stats.WarmFallbacks.Add(1)
			f.log.Debug().Msg("a spare link did not answer in time; a fresh link took the connection")
		default:
			f.stats.WarmFallbacks.Add(1)
			return
		}
		if err == nil {
			up(how, l)
		}
	})
}

// noHalfClose adapts a net.Conn that cannot half-close.
type noHalfClose struct{ net.Conn }

func (noHalfClose) CloseWrite() error { return nil }

// advice is the log message for a failed connection: what to fix.
func advice(rule config.Forward, err error) string {
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
	StatsSnapshot
}

func (f *forward) status() Status {
	f.mu.Lock()
	st := Status{Name: f.rule.Name, Listen: f.rule.Listen, Target: f.rule.Target(), State: f.state, Mode: f.rule.Mode}
	if f.bindErr != nil {
		st.BindError = f.bindErr.Error()
	}
	for _, ln := range f.listeners {
		st.Addrs = append(st.Addrs, ln.Addr().String())
	}
	f.mu.Unlock()
	st.SpriteState, st.LastWake = f.waker.State()
	st.StatsSnapshot = f.stats.Snapshot()
	st.Wakes, st.WakeWait = f.waker.Wakes()
	env := f.d.env.Load()
	st.MaxMessage = env.client.MessageLimit(f.rule.Sprite)
	if f.rule.Mode == config.Direct {
		st.WarmLinks = env.warm.count(f.rule.Sprite)
	}
	if f.rule.Mode == config.Mux {
		as := AgentStatus{State: "idle"}
		if p := f.pool.Load(); p != nil {
			as = p.status()
		}
		st.Agent = &as
	}
	return st
}
