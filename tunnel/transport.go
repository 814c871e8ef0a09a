package tunnel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/sock"
	"github.com/spritefwd/spritefwd/sprites"
)

// Fronts without a listener of their own: their connections arrive from
// elsewhere (the control socket, the SOCKS port) and are accounted for by
// a forward-like row the daemon keeps per front and target, which is what
// status and metrics show for them (see Daemon.Carry).
const (
	FrontStdio = "stdio"
	FrontSOCKS = "socks"
)

// Target is where a front wants a connection to go, and the settings that
// decide how it gets there.
type Target struct {
	// Front names who asked (a forward's name, "stdio", "socks"), for
	// errors and logs.
	Front     string
	Sprite    string
	Host      string
	Port      int
	Mode      config.Mode
	KeepAwake config.KeepAwake
}

func (t Target) String() string { return fmt.Sprintf("%s:%d", t.Sprite, t.Port) }

// Hooks are how a transport reports on one connection to the front that
// accounts for it. Every field may be nil but OnEnd.
type Hooks struct {
	Up, Down *atomic.Int64 // bytes client→sprite and sprite→client
	// OnResume: a mux stream moved to a new link after took.
	OnResume func(took time.Duration)
	// OnClientDone: the client closed its sending side, and the connection
	// now only waits out the sprite's last bytes (in direct mode, where a
	// proxy link cannot tell when the server inside closed). evict resets
	// the connection at once.
	OnClientDone func(evict func())
	// OnFallback: the sprite's agent could not be deployed, and its mux
	// connections go direct for a while. Called once per such outage.
	OnFallback func(err error)
	// OnUp is called once the sprite's side is up, with the link's
	// target. A connection begun on a spare link is open before that.
	OnUp func(target string)
	// WarmHits, WarmMisses and WarmFallbacks count how direct-mode
	// connections got their link (see warmConn).
	WarmHits, WarmMisses, WarmFallbacks *atomic.Int64
	// Confirm: the front tells its client whether the connection opened
	// (SOCKS, stdio), so Open returns only once the sprite's side is up,
	// even on a spare link, and a refusal is its error.
	Confirm bool
	// OnEnd is called once, when an opened connection has ended.
	OnEnd func(Result)
}

func (h Hooks) up(target string) {
	if h.OnUp != nil {
		h.OnUp(target)
	}
}

// Result says how a carried connection ended.
type Result struct {
	End End
	// Err is the cause of an abnormal end. ErrNothingListening, ErrLinkDead
	// and sprites.ErrMessageTooBig are among what it may wrap.
	Err error
	// ClientClosed: the client had closed its side before the end, so a
	// broken link cost it at most the rest of a reply.
	ClientClosed bool
}

// Transport is how every front reaches a sprite: listeners, stdio and
// SOCKS alike open their connections through one.
type Transport interface {
	// Open joins local to t once the sprite's side is up, which may take
	// a wake; nothing is read from local before. After a nil error the
	// transport owns local: it calls h.OnEnd once when the connection
	// ends, and aborts it (resetting local) when ctx is cancelled. After
	// an error local is untouched; the caller resets it.
	Open(ctx context.Context, t Target, local sock.Conn, h Hooks) error
}

// transportFor returns the transport for a mode: mux with direct as its
// fallback, or direct.
func (d *Daemon) transportFor(mode config.Mode) Transport {
	if mode == config.Mux {
		return fallback{primary: d.muxT, secondary: d.directT}
	}
	return d.directT
}

// LinkDialer makes direct-mode links. The daemon's dials a new proxy link
// through its current API client.
type LinkDialer func(ctx context.Context, sprite, host string, port int) (directLink, error)

// directTransport carries each connection on a proxy link of its own: a
// spare from the sprite's warm pool when one is at hand (see warmConn),
// else one dialled now.
type directTransport struct {
	d    *Daemon
	dial LinkDialer
}

func (d *Daemon) dialLink(ctx context.Context, sprite, host string, port int) (directLink, error) {
	l, err := d.env.Load().client.Dial(ctx, sprite, host, port)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return l, nil
}

func (t *directTransport) Open(ctx context.Context, tg Target, local sock.Conn, h Hooks) error {
	env := t.d.env.Load()
	waker := t.d.waker(tg.Sprite)
	connect := func(ctx context.Context) (directLink, error) {
		return Connect(ctx, waker, tg.Port, func(ctx context.Context) (directLink, error) {
			return t.dial(ctx, tg.Sprite, tg.Host, tg.Port)
		})
	}
	var pool *warmPool
	if tg.KeepAwake != config.Never {
		// Pinged spares keep a sprite awake, which keep_awake: never forbids.
		pool = env.warm.get(tg.Sprite)
	}
	// The connection holds the sprite's spares until its client is done
	// (then it only waits out the sprite's last bytes, as keepalive lets
	// the sprite sleep then), or until it ends.
	release := func() {}
	if pool != nil {
		pool.acquire()
		var once sync.Once
		release = func() { once.Do(pool.release) }
	}
	link := t.startOnSpare(ctx, pool, tg, connect, h, func(how warmOutcome, l directLink) {
		if how == warmHit {
			waker.connected()
		}
		pool.connected()
		h.up(l.Target())
	})
	if link != nil && h.Confirm {
		// The front answers its client only once the sprite's side is up,
		// so a refusal must come back from here, not as a reset later.
		if err := link.Connected(ctx); err != nil {
			link.CloseNow()
			release()
			var se *SetupError
			if errors.As(err, &se) {
				err = se.Err
			}
			return err
		}
	}
	if link == nil {
		l, err := connect(ctx)
		if err != nil {
			release()
			return err
		}
		if pool != nil {
			pool.connected()
		}
		h.up(l.Target())
		link = l
	}
	go func() {
		defer release()
		t.relay(ctx, env, tg, local, link, h, release)
	}()
	return nil
}

// startOnSpare begins the connection on one of the sprite's spare links,
// if the pool has one that answered lately: the init goes out now and the
// client's bytes follow it, and connect races it if "connected" is late.
// up is called once a link is up, with how. It returns nil on a miss.
func (t *directTransport) startOnSpare(ctx context.Context, pool *warmPool, tg Target, connect func(context.Context) (directLink, error), h Hooks, up func(warmOutcome, directLink)) directLink {
	if pool == nil {
		return nil
	}
	sp := pool.take()
	if sp == nil {
		count(h.WarmMisses)
		return nil
	}
	first, err := sp.Start(tg.Host, tg.Port)
	if err != nil {
		count(h.WarmMisses) // it died as it was taken
		pool.failed()
		return nil
	}
	return startWarm(ctx, first, pool.fallbackAfter(), connect, func(how warmOutcome, l directLink, err error) {
		if ctx.Err() != nil {
			return // shut down or drained: not the spare's doing
		}
		switch how {
		case warmHit:
			count(h.WarmHits)
		case warmFallback:
			count(h.WarmFallbacks)
			t.d.log.Debug().Str("sprite", tg.Sprite).Str("front", tg.Front).Msg("a spare link did not answer in time; a fresh link took the connection")
		case warmFailed:
			count(h.WarmFallbacks) // a fallback whose fresh dial failed too; the failure is reported as a connect's
			return
		default:
			return // the client left during the race
		}
		if err == nil {
			up(how, l)
		}
	})
}

func count(n *atomic.Int64) {
	if n != nil {
		n.Add(1)
	}
}

// relay carries one connection on its link until it ends, pinging the
// link while the client is there and the target keeps the sprite awake.
func (t *directTransport) relay(ctx context.Context, env *linkEnv, tg Target, local sock.Conn, link directLink, h Hooks, clientGone func()) {
	var busy, clientDone atomic.Bool
	kctx, stopPings := context.WithCancel(ctx)
	ka := &Keepalive{Pinger: link, Interval: env.keepalive, Clock: t.d.clock, Busy: &busy}
	abort := func() {
		link.CloseNow()
		sock.Reset(local)
	}
	var ready <-chan struct{}
	if w, ok := link.(*warmConn); ok {
		ready = w.Ready()
	}
	opts := RelayOptions{
		HalfCloseTimeout: env.halfClose, DrainTimeout: 5 * time.Second, Ready: ready,
		Up: h.Up, Down: h.Down, Busy: &busy,
		OnClientDone: func() {
			clientDone.Store(true)
			clientGone()
			if h.OnClientDone != nil {
				h.OnClientDone(abort)
			}
		},
	}
	if tg.KeepAwake != config.Never {
		ticker := time.NewTicker(env.keepalive)
		defer ticker.Stop()
		opts.Tick = ticker.C
		opts.OnTick = func() error {
			if clientDone.Load() {
				return nil // the client is gone: let the sprite sleep
			}
			return ka.Tick(kctx)
		}
	}
	// Aborted, the connection resets its client at once: closing the link
	// alone would not end a write to a client that has stopped reading.
	stopAbort := context.AfterFunc(ctx, abort)
	res := Relay(local, link, opts)
	stopAbort()
	stopPings()
	ka.Wait()
	out := Result{End: res.End, Err: res.Err, ClientClosed: res.ClientClosed}
	if res.End == EndLinkBroken && !errors.Is(res.Err, ErrLinkDead) && !errors.Is(res.Err, sprites.ErrMessageTooBig) {
		out.Err = fmt.Errorf("link broken: %w", res.Err)
	}
	h.OnEnd(out)
}

// muxTransport carries each connection as a stream to the sprite's agent,
// which it deploys on first use. It fails with ErrAgentUnavailable while
// the agent cannot be deployed; see fallback.
type muxTransport struct{ d *Daemon }

func (t *muxTransport) Open(ctx context.Context, tg Target, local sock.Conn, h Hooks) error {
	p := t.d.agent(tg.Sprite, t.d.waker(tg.Sprite))
	if err := p.usable(); err != nil {
		return fmt.Errorf("%w: %w", ErrAgentUnavailable, err)
	}
	var stop atomic.Pointer[func() bool]
	so := mux.StreamOptions{
		DrainTimeout: 5 * time.Second, Up: h.Up, Down: h.Down, OnResume: h.OnResume,
		OnEnd: func(s *mux.Stream) {
			if f := stop.Load(); f != nil {
				(*f)()
			}
			h.OnEnd(muxResult(s.Err()))
		},
	}
	keepAwake := tg.KeepAwake != config.Never
	st, err := p.client.Open(ctx, local, tg.Host, tg.Port, keepAwake, so)
	if errors.Is(err, mux.ErrClientClosed) && !errors.Is(err, mux.ErrEarlyStreamLost) && ctx.Err() == nil {
		// A reload retired the pool between the lookup and the open; its
		// successor takes the stream, unless the connection's first bytes
		// went to the closed one, which reset it.
		p = t.d.agent(tg.Sprite, t.d.waker(tg.Sprite))
		st, err = p.client.Open(ctx, local, tg.Host, tg.Port, keepAwake, so)
	}
	var de *deployError
	if errors.As(err, &de) {
		if p.fail(err) && h.OnFallback != nil {
			h.OnFallback(err)
		}
		if !errors.Is(err, mux.ErrEarlyStreamLost) {
			return fmt.Errorf("%w: %w", ErrAgentUnavailable, err)
		}
		// The connection's first bytes went to the agent session that
		// failed: it was reset, and cannot go direct. The next one will.
	}
	if err != nil {
		return fmt.Errorf("forward %s: sprite %s: %w", tg.Front, tg.Sprite, err)
	}
	h.up(tg.String())
	// Aborted, reset the client first: one that does not read would hold
	// its stream's drain.
	s := context.AfterFunc(ctx, func() {
		sock.Reset(local)
		st.Reset(errors.New("forward stopped"))
	})
	stop.Store(&s)
	select {
	case <-st.Done():
		s() // ended before stop was there for OnEnd to call
	default:
	}
	return nil
}

// muxResult says how a stream's end looks to a front.
func muxResult(err error) Result {
	code, peerReset := mux.ResetCodeOf(err)
	switch {
	case err == nil:
		return Result{End: EndClean}
	case peerReset && code == mux.ResetRefused:
		return Result{End: EndPeerReset, Err: fmt.Errorf("%w: %w", ErrNothingListening, err)}
	case peerReset:
		return Result{End: EndPeerReset, Err: err}
	case errors.Is(err, mux.ErrLocalAborted):
		return Result{End: EndClientAborted, Err: err}
	}
	// The resume window expired, or the agent restarted: the stream could
	// not be resumed.
	return Result{End: EndLinkBroken, Err: err}
}

// fallback is a transport that goes to secondary while primary says its
// agent is unavailable: mux mode's way to direct mode.
type fallback struct{ primary, secondary Transport }

func (f fallback) Open(ctx context.Context, tg Target, local sock.Conn, h Hooks) error {
	err := f.primary.Open(ctx, tg, local, h)
	if errors.Is(err, ErrAgentUnavailable) {
		return f.secondary.Open(ctx, tg, local, h)
	}
	return err
}
