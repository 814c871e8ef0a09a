package sprites

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Spare is a proxy link upgraded ahead of need and not yet given a target:
// it has no target in its query and has sent no init message, so the server
// has dialled nothing and waits, without a timeout, for the init. Start
// gives it one; the client's first bytes can follow the init at once, since
// the server reads them only after it has dialled. A new connection on a
// Spare therefore costs one round trip to its first answer, where Dial
// costs TLS and the upgrade before that.
//
// A Spare is activity on its sprite like any live WebSocket: hold one only
// while the sprite is in use.
type Spare struct {
	c      *Client
	sprite string
	ws     *websocket.Conn
	fw     *frameWriter
	seen   atomic.Int64 // unix nanos of the upgrade or the last pong
	rtt    atomic.Int64 // the last ping's round trip, in nanoseconds
	setup  time.Duration

	// The first message is read from the upgrade on, so that pings are
	// answered before Start; after Start it is "connected" or the close
	// that says why not.
	read    chan struct{} // closed once the first read returned
	typ     websocket.MessageType
	msg     []byte
	readErr error

	started atomic.Bool
	link    atomic.Pointer[Link] // what Start made, for its pongs
}

// ErrSpareUsed: Start was called twice on one Spare.
var ErrSpareUsed = errors.New("spare link already started")

// DialSpare upgrades a proxy link to sprite that waits for its target. The
// handshake is bounded by Options.HandshakeTimeout and by ctx; failures are
// *Error, as Dial's are. DialSpare wakes a sleeping sprite, as any call
// does: call it only for a sprite known to be running.
func (c *Client) DialSpare(ctx context.Context, sprite string) (*Spare, error) {
	hctx, cancel := context.WithTimeout(ctx, c.handshake)
	defer cancel()
	s := &Spare{c: c, sprite: sprite, read: make(chan struct{})}
	start := time.Now()
	ws, up, err := c.upgrade(ctx, hctx, sprite, 0, "", func() {
		s.touch()
		if l := s.link.Load(); l != nil {
			l.touch()
		}
	})
	if err != nil {
		return nil, err
	}
	s.ws, s.setup = ws, time.Since(start)
	if up != nil && up.fw != nil {
		s.fw = up.fw
		s.fw.armed = true // the upgrade is done: only frames go by from here
	}
	ws.SetReadLimit(-1) // see Dial
	s.touch()
	go func() {
		// No context: CloseNow ends the read, and a context that ended
		// would close the WebSocket under a Link still in use.
		s.typ, s.msg, s.readErr = ws.Read(context.Background())
		close(s.read)
	}()
	return s, nil
}

// Ping sends a ping and waits for its pong, which also times the round
// trip (see RTT). Once started, the Spare belongs to its Link, whose own
// keepalive judges it: Ping then does nothing, so that a ping meant for a
// waiting link never waits behind a connection's writes.
func (s *Spare) Ping(ctx context.Context) error {
	if s.started.Load() {
		return nil
	}
	start := time.Now()
	if err := s.ws.Ping(ctx); err != nil {
		return err
	}
	s.rtt.Store(int64(time.Since(start)))
	s.touch()
	return nil
}

// RTT is the last ping's round trip; zero before the first.
func (s *Spare) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// Setup is how long the upgrade took: TCP, TLS and the upgrade's own round
// trip through the API's edge to the sprite, where a ping may be answered
// nearer.
func (s *Spare) Setup() time.Duration { return s.setup }

// LastSeen is when the Spare was upgraded or last answered a ping.
func (s *Spare) LastSeen() time.Time { return time.Unix(0, s.seen.Load()) }

func (s *Spare) touch() { s.seen.Store(time.Now().UnixNano()) }

// Dead reports whether the Spare is gone before its Start: the server or
// the network closed it, or the server sent something unasked.
func (s *Spare) Dead() bool {
	if s.started.Load() {
		return false
	}
	select {
	case <-s.read:
		return true
	default:
		return false
	}
}

// Start sends the init message for host:port and returns the Link at once,
// before "connected": writes go out behind the init, reads wait for
// "connected", and Link.Connected says whether it came. A Spare starts once.
func (s *Spare) Start(host string, port int) (*Link, error) {
	if !s.started.CompareAndSwap(false, true) {
		return nil, ErrSpareUsed
	}
	fail := func(class Class, cause error, status, code int, reason string) error {
		return &Error{Op: "proxy", Sprite: s.sprite, Port: port, Class: class, Status: status, Code: code, Reason: reason, Err: cause}
	}
	init, _ := json.Marshal(initMessage{Host: host, Port: port})
	// No context: one small message, and a dead connection's CloseNow
	// ends the write (see Link.Read).
	if err := s.ws.Write(context.Background(), websocket.MessageText, init); err != nil {
		s.ws.CloseNow()
		return nil, s.c.closeErr(fail, context.Background(), err)
	}
	l := newLink(s.ws, s.c, s.sprite, s.c.limitFor(s.sprite), s.fw)
	l.start = &spareStart{spare: s, fail: fail}
	s.link.Store(l)
	return l, nil
}

// CloseNow drops the Spare. A Spare that was started belongs to its Link.
func (s *Spare) CloseNow() error { return s.ws.CloseNow() }

// spareStart is what a Link begun on a Spare waits for.
type spareStart struct {
	spare *Spare
	fail  func(Class, error, int, int, string) error
	once  sync.Once
	err   error
}

func (st *spareStart) wait(ctx context.Context, l *Link) error {
	select {
	case <-st.spare.read:
	case <-ctx.Done():
		return ctx.Err()
	}
	st.once.Do(func() {
		s := st.spare
		r, err := s.c.initReply(st.fail, context.Background(), s.typ, s.msg, s.readErr)
		if err != nil {
			s.ws.CloseNow()
			st.err = err
			return
		}
		l.target.Store(&r.Target)
		l.touch()
		s.c.maybeProbe(s.sprite, l.limit) // as Dial does once a link is up
	})
	return st.err
}
