package mux

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/backoff"
	"github.com/spritefwd/spritefwd/sock"
)

// ClientOptions configure a Client.
type ClientOptions struct {
	// Connect dials a link to the agent and shakes hands (see Dial). It owns
	// waking the sprite and deploying the agent, and should give up within
	// its own bound (wake_timeout).
	Connect func(ctx context.Context, h Hello) (*Session, bool, error)
	// Buffer and ResumeWindow are each stream's, at both ends: Buffer is
	// the most a stream's window grows to.
	Buffer int
	// Budget is what the windows of this client's streams share, and
	// perhaps other clients'; nil: each window is Buffer.
	Budget       *Budget
	ResumeWindow time.Duration
	// IdleTimeout closes the session this long after its last stream ends,
	// so that the sprite can sleep.
	IdleTimeout time.Duration
	// PingInterval pings the agent while a stream that keeps the sprite
	// awake is open. Pings also find a dead agent, which the API's edge
	// would not report. Zero disables them.
	PingInterval time.Duration
	// ProbeAfter: a session quiet for longer is pinged before it takes a
	// new stream, so a new connection never lands on a dead link.
	ProbeAfter time.Duration
	// OnSession, if set, is called with each session as it comes up (in
	// its own goroutine): the daemon watches the sprite's ports on it.
	OnSession func(*Session)
	Log       zerolog.Logger
}

// ErrClientClosed: the client was closed, or replaced by a reload and
// closed when idle; a caller that still held it should get the new one.
var ErrClientClosed = errors.New("mux client closed")

// ClientStats count a client's sessions and resumptions.
type ClientStats struct {
	Connected   bool
	Sessions    int64 // links set up, first one included
	Resumptions int64 // streams moved to a new carrier
	Streams     int
}

// Client is the daemon's side of mux mode for one agent: it dials the
// session lazily, opens a stream per connection, and when a link drops it
// redials and resumes every stream it can.
type Client struct {
	opts   ClientOptions
	id     SessionID
	ctx    context.Context
	cancel context.CancelFunc

	sessions, resumptions atomic.Int64

	mu        sync.Mutex
	sess      *Session
	dialing   chan struct{} // closed when the connect in progress ends
	dialErr   error
	streams   map[uint64]*Stream
	awake     map[uint64]bool // streams that want pings
	probing   map[*Session]*probeRun
	nextID    uint64
	opening   []earlyOpen // new streams waiting for the session being made (openEarly)
	idle      *time.Timer
	repairing bool
	again     bool
	closed    bool
	retiring  bool   // CloseWhenIdle: serve the streams there are, take no new one
	onIdle    func() // run when the last of them ends
	wg        sync.WaitGroup
}

// NewClient returns a client with no session yet.
func NewClient(opts ClientOptions) *Client {
	if opts.ProbeAfter <= 0 {
		opts.ProbeAfter = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{opts: opts, id: NewSessionID(), ctx: ctx, cancel: cancel,
		streams: map[uint64]*Stream{}, awake: map[uint64]bool{}, probing: map[*Session]*probeRun{}}
}

// Stats reports the client's counters.
func (c *Client) Stats() ClientStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ClientStats{Connected: c.sess != nil, Sessions: c.sessions.Load(), Resumptions: c.resumptions.Load(), Streams: len(c.streams)}
}

// Open carries local to host:port inside the sprite on a new stream. The
// stream's own options are extended with the client's buffer, window and
// hooks; keepAwake streams are pinged for.
//
// A session quiet for longer than ProbeAfter may have died unseen (the
// API's edge does not report a dead agent). With resumption on, the stream
// opens on it at once and a ping follows its open frame: a live agent
// costs the connection nothing more, and a dead one is found by the ping,
// whereupon the stream is carried over to the redialled session like any
// other (see probe). With resumption off, the ping must come first.
func (c *Client) Open(ctx context.Context, local sock.Conn, host string, port int, keepAwake bool, so StreamOptions) (*Stream, error) {
	if st, ok, err := c.openEarly(ctx, local, host, port, keepAwake, so); ok {
		return st, err
	}
	for attempt := 0; ; attempt++ {
		sess, err := c.session(ctx)
		if err != nil {
			return nil, err
		}
		quiet := sess.Quiet() > c.opts.ProbeAfter
		if quiet && c.opts.ResumeWindow <= 0 {
			if err := sess.Alive(sess.ProbeTimeout()); err != nil {
				c.opts.Log.Info().Err(err).Msg("agent session dead; reconnecting")
				c.dropSession(sess)
				continue
			}
			quiet = false
		}
		c.mu.Lock()
		if c.closed || c.retiring {
			c.mu.Unlock()
			return nil, ErrClientClosed
		}
		st := c.addStreamLocked(local, keepAwake, so)
		st.unconfirmed.Store(quiet)
		c.mu.Unlock()
		if err := sess.Open(st, host, port); err != nil {
			if c.reopenAfter(ctx, sess, st, err, attempt) {
				continue
			}
			return nil, fmt.Errorf("open stream: %w", err)
		}
		if quiet {
			c.probe(sess, st)
		}
		return st, nil
	}
}

// reopenAfter forgets st, whose open failed with sess, and reports whether
// to try again on a new session: unless sessions keep dying as fast as they
// are made.
func (c *Client) reopenAfter(ctx context.Context, sess *Session, st *Stream, err error, attempt int) bool {
	c.opts.Log.Debug().Err(err).Msg("open on the agent session failed; reconnecting")
	c.remove(st.id)
	c.dropSession(sess)
	if attempt >= 10 || ctx.Err() != nil {
		return false
	}
	select {
	case <-ctx.Done():
	case <-time.After(reopen.Delay(attempt)):
	}
	return true
}

// addStreamLocked makes and registers the stream for a new connection.
func (c *Client) addStreamLocked(local sock.Conn, keepAwake bool, so StreamOptions) *Stream {
	c.nextID++
	id := c.nextID
	so.Buffer, so.ResumeWindow, so.LingerForPeer, so.Budget = c.opts.Buffer, c.opts.ResumeWindow, true, c.opts.Budget
	so.OnDetach = func(st *Stream) {
		if !st.opening.Load() {
			c.kick()
		}
	}
	onEnd := so.OnEnd
	so.OnEnd = func(st *Stream) {
		c.remove(st.id)
		if st.opening.CompareAndSwap(true, false) {
			return // Open has not returned it: openEarly reports this end
		}
		if onEnd != nil {
			onEnd(st)
		}
	}
	onResume := so.OnResume
	so.OnResume = func(took time.Duration) {
		c.resumptions.Add(1)
		if onResume != nil {
			onResume(took)
		}
	}
	st := NewStream(id, local, so)
	c.streams[id] = st
	if keepAwake {
		c.awake[id] = true
	}
	if c.idle != nil {
		c.idle.Stop()
	}
	return st
}

// ErrEarlyStreamLost: the session a new stream was opened on, ahead of
// the agent's proof, failed, and so did every try after it. The stream had
// read from its connection, so that connection cannot go another way: it
// is reset.
var ErrEarlyStreamLost = errors.New("the agent session failed after the connection's first bytes went to it")

// openEarly opens the stream on the session being made when there is none:
// its open and first bytes follow the daemon's proof (see Dial), and a
// new link's first connection waits for no round trip of the handshake's.
// ok is false when there is a session, or resumption is off: the stream
// must then take the usual way, since a failed link could not hand it on.
//
// If the link fails, the stream detaches and carries on when a session is
// up, as after any drop. If no session comes up, a stream that had read
// from its connection is reset; one that had not leaves the connection
// untouched, for the caller to carry another way.
func (c *Client) openEarly(ctx context.Context, local sock.Conn, host string, port int, keepAwake bool, so StreamOptions) (st *Stream, ok bool, err error) {
	c.mu.Lock()
	if c.sess != nil || c.closed || c.retiring || c.opts.ResumeWindow <= 0 {
		c.mu.Unlock()
		return nil, false, nil
	}
	st = c.addStreamLocked(local, keepAwake, so)
	st.opening.Store(true)
	st.unconfirmed.Store(true) // its link may fail before the agent reads the open
	c.opening = append(c.opening, earlyOpen{st: st, host: host, port: port})
	c.mu.Unlock()
	_, err = c.session(ctx)
	c.mu.Lock()
	c.opening = slices.DeleteFunc(c.opening, func(o earlyOpen) bool { return o.st == st })
	c.mu.Unlock()
	// A link took it if this claim fails. Given up for ctx while the dial
	// runs, it may be starting there still: it is then lost like one that
	// started, and an attach that comes after its reset is refused.
	taken := !st.claimEarly()
	read := taken && (st.started() || err != nil && ctx.Err() != nil)
	if !read {
		// No link took it, or the one that did could not write its open:
		// it never read from its connection.
		st.opening.Store(false)
		c.remove(st.id)
		if err != nil {
			return nil, true, err
		}
		return nil, false, nil // the usual way, on the session now up
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrEarlyStreamLost, err)
		st.Reset(err) // its OnEnd forgets it; still opening, its end is reported by Open's error alone
		st.opening.Store(false)
		return nil, true, err
	}
	if !st.opening.CompareAndSwap(true, false) {
		// It ended before Open could return it, and its end was held:
		// the caller hears of it now, as from a stream that ends at once.
		if so.OnEnd != nil {
			so.OnEnd(st)
		}
		return st, true, nil
	}
	if st.lostWith() {
		// The link it went on failed, and a later one came up: it resumes
		// there, or opens again if the agent never had it.
		c.kick()
	}
	return st, true, nil
}

// probe pings sess, just after st's open frame went out on it. The link
// keeps order, so an answer means the agent has the open, and st is an
// ordinary stream (anything else the link delivers meanwhile counts as an
// answer too: see Session.Alive; it errs on the safe side, below). No answer closes the session: st detaches, and resumes
// on the next session, where an agent that never saw the open says so and
// the stream opens again with its bytes replayed (Session.Resume).
//
// Streams opened while a probe is on its way join it rather than send
// pings of their own: a burst of connections on a quiet session costs one
// ping. The answer confirms them too, though their opens may have gone
// after the ping; confirmed only keeps a stream from opening a second
// time on a restarted agent, so that errs on the safe side.
func (c *Client) probe(sess *Session, st *Stream) {
	c.mu.Lock()
	if run := c.probing[sess]; run != nil {
		run.streams = append(run.streams, st)
		c.mu.Unlock()
		return
	}
	if c.closed {
		c.mu.Unlock()
		return
	}
	run := &probeRun{streams: []*Stream{st}}
	c.probing[sess] = run
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		err := sess.Alive(sess.ProbeTimeout())
		c.mu.Lock()
		delete(c.probing, sess)
		c.mu.Unlock()
		if err != nil {
			c.opts.Log.Info().Err(err).Msg("agent session dead; reconnecting")
			c.dropSession(sess)
			return
		}
		for _, st := range run.streams {
			st.unconfirmed.Store(false)
		}
	}()
}

// probeRun is a probe on its way, and the streams it will confirm.
type probeRun struct{ streams []*Stream }

func (c *Client) remove(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.streams, id)
	delete(c.awake, id)
	if len(c.streams) == 0 && c.onIdle != nil {
		go c.onIdle() // Close takes c.mu
		c.onIdle = nil
		return
	}
	if len(c.streams) == 0 && c.sess != nil && c.opts.IdleTimeout > 0 && !c.closed {
		sess := c.sess
		if c.idle != nil {
			c.idle.Stop()
		}
		c.idle = time.AfterFunc(c.opts.IdleTimeout, func() {
			c.mu.Lock()
			idle := len(c.streams) == 0 && c.sess == sess
			c.mu.Unlock()
			if idle {
				c.opts.Log.Debug().Msg("agent session idle; closing it so the sprite can sleep")
				c.dropSession(sess)
			}
		})
	}
}

// session returns the live session, connecting if there is none. One
// connect runs at a time; everyone waiting shares its result.
func (c *Client) session(ctx context.Context) (*Session, error) {
	for {
		c.mu.Lock()
		if c.closed || c.retiring {
			c.mu.Unlock()
			return nil, ErrClientClosed
		}
		if c.sess != nil {
			s := c.sess
			c.mu.Unlock()
			return s, nil
		}
		if c.dialing == nil {
			c.dialing = make(chan struct{})
			c.wg.Add(1)
			go c.connect(c.dialing)
		}
		ch := c.dialing
		c.mu.Unlock()
		select {
		case <-ch:
			c.mu.Lock()
			s, err, closed := c.sess, c.dialErr, c.closed
			c.mu.Unlock()
			if closed {
				return nil, ErrClientClosed // the caller should take the pool's successor
			}
			if s != nil {
				return s, nil
			}
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Client) connect(ch chan struct{}) {
	defer c.wg.Done()
	c.mu.Lock()
	var waiting []StreamCount
	for _, st := range c.streams {
		if st.lostWith() {
			waiting = append(waiting, StreamCount{ID: st.id, Received: st.Received()})
		}
	}
	opening := slices.Clone(c.opening)
	c.mu.Unlock()
	sess, resumed, err := c.opts.Connect(c.ctx, Hello{Session: c.id, ResumeWindow: c.opts.ResumeWindow, Buffer: c.bufferSize(), Resume: waiting, open: opening})
	if err == nil && !resumed {
		sess.DropEarly() // the agent knows none of them
	}
	c.mu.Lock()
	c.dialing, c.dialErr = nil, err
	var orphans []*Stream
	if err == nil {
		if c.closed {
			c.mu.Unlock()
			sess.Close()
			close(ch)
			return
		}
		c.sess = sess
		c.sessions.Add(1)
		if !resumed {
			// Every stream registered now belongs to an earlier session,
			// which the agent no longer knows: it restarted, or forgot a
			// session whose link it saw die a resume window ago. Only a
			// stream that may never have reached it can go on (reopens).
			for _, st := range c.streams {
				if st.on.Load() != sess && !st.reopens() { // opened early on sess, it is sess's own
					orphans = append(orphans, st)
				}
			}
		}
		c.wg.Add(1)
		go c.watch(sess)
		if c.opts.OnSession != nil {
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.opts.OnSession(sess)
			}()
		}
	}
	c.mu.Unlock()
	close(ch)
	for _, st := range orphans {
		st.fail(ErrUnknownStream, false)
	}
}

func (c *Client) bufferSize() int {
	if c.opts.Buffer <= 0 {
		return DefaultBuffer
	}
	return max(c.opts.Buffer, minBuffer)
}

// dropSession closes sess and forgets it, unless it was already replaced.
func (c *Client) dropSession(sess *Session) {
	sess.Close()
	c.mu.Lock()
	if c.sess == sess {
		c.sess = nil
	}
	c.mu.Unlock()
}

// watch pings the session while it has streams that keep the sprite awake,
// and forgets it when it ends; its streams then detach and ask for repair.
func (c *Client) watch(sess *Session) {
	defer c.wg.Done()
	var tick <-chan time.Time
	if c.opts.PingInterval > 0 {
		t := time.NewTicker(c.opts.PingInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-sess.Done():
			c.dropSession(sess)
			return
		case <-c.ctx.Done():
			sess.Close()
			return
		case <-tick:
			c.mu.Lock()
			want := len(c.awake) > 0
			c.mu.Unlock()
			if want {
				if err := sess.Alive(probeTimeout + c.opts.PingInterval); err != nil {
					c.opts.Log.Info().Err(err).Msg("agent stopped answering pings; reconnecting")
				}
			}
		}
	}
}

// Probe pings the session now, as after the laptop slept: a dead link is
// found in one round trip instead of a TCP timeout.
func (c *Client) Probe() {
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess != nil {
		if err := sess.Alive(sess.ProbeTimeout()); err != nil {
			c.opts.Log.Info().Err(err).Msg("agent session did not survive; reconnecting")
		}
	}
}

// kick starts the repair loop, or tells the running one to go round again.
func (c *Client) kick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if c.repairing {
		c.again = true
		return
	}
	c.repairing = true
	c.wg.Add(1)
	go c.repair()
}

// repair resumes detached streams, reconnecting as needed, until none is
// left detached. Streams whose window runs out reset themselves.
func (c *Client) repair() {
	defer c.wg.Done()
	attempt := 0
	for {
		c.mu.Lock()
		c.again = false
		var todo []*Stream
		for _, st := range c.streams {
			if st.Detached() {
				todo = append(todo, st)
			}
		}
		if len(todo) == 0 || c.closed {
			c.repairing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		sess, err := c.session(c.ctx)
		if err == nil {
			// All at once: resuming costs one round trip, not one per stream.
			var wg sync.WaitGroup
			var failed atomic.Bool
			ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
			for _, st := range todo {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if st.Detached() && sess.Resume(ctx, st) != nil {
						failed.Store(true)
					}
				}()
			}
			wg.Wait()
			cancel()
			sess.DropEarly() // resumes for streams that ended meanwhile
			if failed.Load() {
				c.dropSession(sess) // its streams detach again; go round
			}
			attempt = 0
			continue
		}
		c.opts.Log.Debug().Err(err).Msg("resume attempt failed; retrying")
		select {
		case <-c.ctx.Done():
			c.mu.Lock()
			c.repairing = false
			c.mu.Unlock()
			return
		case <-time.After(backoff.Wake.Delay(attempt)):
		}
		attempt++
	}
}

// ResetAll resets streams in parallel, since each reset may wait
// DrainTimeout for its client to take what was delivered, and returns when
// all are done.
func ResetAll(streams []*Stream, err error) {
	endAll(streams, func(st *Stream) { st.Reset(err) })
}

// endAll runs end on every stream at once and waits for all of them.
func endAll(streams []*Stream, end func(*Stream)) {
	var wg sync.WaitGroup
	for _, st := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			end(st)
		}()
	}
	wg.Wait()
}

// reopen spaces a stream's opens while sessions die under it as fast as
// they are made; each new session is dialled with the wake policy anyway.
var reopen = backoff.Policy{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: 0.3}

// CloseWhenIdle closes the client once its last stream has ended (at once
// if none is open) and then calls done. A client replaced by a reload
// serves the streams it has and takes no new ones.
func (c *Client) CloseWhenIdle(done func()) {
	finish := func() {
		c.Close()
		done()
	}
	c.mu.Lock()
	c.retiring = true // from now on Open refuses: no stream can slip in before the close
	if len(c.streams) > 0 {
		c.onIdle = finish
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	go finish()
}

// Close resets every stream and closes the session.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	if c.idle != nil {
		c.idle.Stop() // it would log after its owner is gone
	}
	all := make([]*Stream, 0, len(c.streams))
	for _, st := range c.streams {
		if st.opening.Load() && st.claimEarly() {
			continue // no link has it: its connection is still openEarly's caller's, untouched
		}
		all = append(all, st)
	}
	sess := c.sess
	c.mu.Unlock()
	ResetAll(all, errors.New("forward stopped"))
	c.cancel()
	if sess != nil {
		sess.Close()
	}
	c.wg.Wait()
}
