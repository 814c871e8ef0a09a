package mux

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/sock"
)

// Server is the agent's end: it accepts sessions and serves their streams.
// Streams of a session outlive its link for their resume window.
type Server struct {
	Secret string
	// Dial connects to a target inside the sprite. It is where the agent's
	// policy (loopback only) lives.
	Dial func(ctx context.Context, host string, port int) (sock.Conn, error)
	Log  zerolog.Logger
	// Ports, if set, watches the sprite's listening ports for a watch
	// carrier: it calls changed with the whole list at once and at every
	// change, until ctx ends.
	Ports func(ctx context.Context, changed func(PortList))
	// Budget is what the windows of the streams toward the daemon share;
	// nil: DefaultBudget.
	Budget *Budget

	mu       sync.Mutex
	cond     *sync.Cond // on mu: a carrier's first frame was handled
	budgetOf *Budget    // Budget, or the default made once
	sessions map[SessionID]*serverSession
	watches  map[*context.CancelFunc]struct{}
	wg       sync.WaitGroup
}

// budget is the Budget that the server's streams share.
func (s *Server) budget() *Budget {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.budgetOf == nil {
		s.budgetOf = s.Budget
		if s.budgetOf == nil {
			s.budgetOf = NewBudget(DefaultBudget)
		}
	}
	return s.budgetOf
}

type serverSession struct {
	hello   Hello
	live    *yamux.Session
	streams map[uint64]*serverStream
	// The daemon numbers streams in order, but concurrent opens can arrive
	// out of order. maxSeen is the highest id opened, and holes the ids
	// below it not yet seen; a resume for either is for an open frame that
	// was lost, which the daemon may safely send again.
	maxSeen uint64
	holes   map[uint64]bool
	// Carriers are numbered as accepted; unheaded are those whose first
	// frame is not yet handled. A resume for an unseen stream waits for
	// the earlier ones: its open may be among them.
	accepted uint64
	unheaded map[uint64]bool
	forget   *time.Timer
	// finished remembers the final count of streams that ended cleanly: if
	// our last ack died with the link, the daemon resumes to ask for it.
	finished     map[uint64]uint64
	finishedRing []uint64
	finishedNext int
}

// maxFinished bounds the record of finished streams, per session.
const maxFinished = 4096

func (ss *serverSession) markFinished(id, recv uint64) {
	if ss.finished == nil {
		ss.finished = map[uint64]uint64{}
		ss.finishedRing = make([]uint64, maxFinished)
	}
	if old := ss.finishedRing[ss.finishedNext]; old != 0 {
		delete(ss.finished, old)
	}
	ss.finishedRing[ss.finishedNext] = id
	ss.finishedNext = (ss.finishedNext + 1) % maxFinished
	ss.finished[id] = recv
}

// maxHoles bounds the record of open frames not yet seen.
const maxHoles = 1 << 16

// markOpened records an open frame for id. false: id was already used.
func (ss *serverSession) markOpened(id uint64) bool {
	if id <= ss.maxSeen {
		if !ss.holes[id] {
			return false
		}
		delete(ss.holes, id)
		return true
	}
	if ss.holes == nil {
		ss.holes = map[uint64]bool{}
	}
	for h := ss.maxSeen + 1; h < id && len(ss.holes) < maxHoles; h++ {
		ss.holes[h] = true
	}
	ss.maxSeen = id
	return true
}

func (ss *serverSession) seen(id uint64) bool { return id <= ss.maxSeen && !ss.holes[id] }

// serverStream is a stream, or an open still dialling its target.
type serverStream struct {
	st    *Stream       // nil until ready
	ready chan struct{} // closed once the dial is done
}

// ServeConn runs one link: the handshake, then its streams, until the link
// ends. Streams that were attached to it wait for a resume, and the
// session's record is kept for the resume window even with no streams.
func (s *Server) ServeConn(conn net.Conn) error {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	h, _, key, err := acceptHello(conn, s.Secret, s.known)
	if err != nil {
		drainClose(conn)
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	ys, err := yamux.Server(newUnsealer(conn, key), yamuxConfig(s.Log))
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.sessions == nil {
		s.sessions = map[SessionID]*serverSession{}
	}
	ss := s.sessions[h.Session]
	if ss == nil {
		ss = &serverSession{streams: map[uint64]*serverStream{}}
		s.sessions[h.Session] = ss
	}
	if ss.forget != nil {
		ss.forget.Stop()
		ss.forget = nil
	}
	ss.hello = h
	old := ss.live
	ss.live = ys
	s.mu.Unlock()
	if old != nil {
		old.Close() // the daemon redialled: the old link is dead to it
	}
	s.Log.Debug().Stringer("session", h.Session).Msg("session up")
	path := &Path{} // what this link's streams learn of it together
	defer func() {
		ys.Close()
		s.mu.Lock()
		if ss.live == ys {
			ss.live = nil
			s.forgetLaterLocked(h.Session, ss)
		}
		s.mu.Unlock()
	}()
	for {
		c, err := ys.AcceptStream()
		if err != nil {
			// The link ended, cleanly or cut: the usual way a session ends.
			s.Log.Debug().Err(err).Stringer("session", h.Session).Msg("session link ended")
			return nil
		}
		s.mu.Lock()
		ss.accepted++
		k := ss.accepted
		if ss.unheaded == nil {
			ss.unheaded = map[uint64]bool{}
		}
		ss.unheaded[k] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveStream(h.Session, ss, c, k, path)
		}()
	}
}

func (s *Server) known(id SessionID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sessions[id]
	return ok
}

// forgetLaterLocked drops a session's record once it has had neither a
// link nor streams for its resume window.
func (s *Server) forgetLaterLocked(id SessionID, ss *serverSession) {
	if ss.live != nil || len(ss.streams) > 0 || ss.forget != nil {
		return
	}
	ss.forget = time.AfterFunc(ss.hello.ResumeWindow, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if ss.live == nil && len(ss.streams) == 0 && s.sessions[id] == ss {
			delete(s.sessions, id)
		}
	})
}

// earlierUnheadedLocked reports a carrier accepted before k whose first
// frame is not handled yet.
func (ss *serverSession) earlierUnheadedLocked(k uint64) bool {
	for j := range ss.unheaded {
		if j < k {
			return true
		}
	}
	return false
}

func (s *Server) condLocked() *sync.Cond {
	if s.cond == nil {
		s.cond = sync.NewCond(&s.mu)
	}
	return s.cond
}

func (s *Server) serveStream(id SessionID, ss *serverSession, c *yamux.Stream, k uint64, path *Path) {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	o, resume, recvd, err := readFirst(c)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		s.mu.Lock()
		delete(ss.unheaded, k)
		s.condLocked().Broadcast()
		s.mu.Unlock()
		s.Log.Debug().Err(err).Msg("bad or missing stream header")
		abortCarrier(c)
		return
	}
	if o.Watch {
		s.mu.Lock()
		delete(ss.unheaded, k)
		s.condLocked().Broadcast()
		s.mu.Unlock()
		s.serveWatch(c)
		return
	}
	s.mu.Lock()
	if resume && ss.streams[o.ID] == nil && !ss.seen(o.ID) && ss.earlierUnheadedLocked(k) {
		t := time.AfterFunc(5*time.Second, func() {
			s.mu.Lock()
			s.condLocked().Broadcast()
			s.mu.Unlock()
		})
		deadline := time.Now().Add(5 * time.Second)
		for ss.streams[o.ID] == nil && !ss.seen(o.ID) && ss.earlierUnheadedLocked(k) && time.Now().Before(deadline) {
			s.condLocked().Wait()
		}
		t.Stop()
	}
	s.mu.Unlock()
	refuse := func(code ResetCode, msg string) {
		_ = writeFrame(c, frame{typ: frameReset, a: uint64(code)}, []byte(msg))
		c.Close()
	}
	s.mu.Lock()
	entry := ss.streams[o.ID]
	final, finished := ss.finished[o.ID]
	h, seen := ss.hello, ss.seen(o.ID)
	if !resume {
		entry = nil
		if ss.markOpened(o.ID) {
			entry = &serverStream{ready: make(chan struct{})}
			ss.streams[o.ID] = entry
		}
	}
	delete(ss.unheaded, k)
	s.condLocked().Broadcast()
	s.mu.Unlock()
	if resume {
		switch {
		case entry != nil:
			<-entry.ready
			if entry.st == nil {
				refuse(ResetUnreachable, "the target could not be reached")
				return
			}
			if err := entry.st.Attach(c, path, recvd, true); err != nil {
				s.Log.Debug().Err(err).Uint64("stream", o.ID).Msg("resume failed")
			}
		case finished:
			_ = writeFrame(c, frame{typ: frameResumed, b: final}, nil)
			c.Close()
		case seen:
			refuse(ResetError, ErrUnknownStream.Error())
		default:
			refuse(ResetNotSeen, "no open frame arrived for this stream")
		}
		return
	}
	if entry == nil {
		refuse(ResetError, "stream id already used")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	target, err := s.Dial(ctx, o.Host, o.Port)
	cancel()
	done := func() {
		s.mu.Lock()
		delete(ss.streams, o.ID)
		s.forgetLaterLocked(id, ss)
		s.mu.Unlock()
	}
	if err != nil {
		close(entry.ready)
		done()
		refuse(DialResetCode(err), err.Error())
		return
	}
	st := NewStream(o.ID, target, StreamOptions{Buffer: h.Buffer, ResumeWindow: h.ResumeWindow, Budget: s.budget()})
	_ = st.Attach(c, path, 0, false)
	entry.st = st
	close(entry.ready)
	<-st.Done()
	if err := st.Err(); err != nil {
		s.Log.Debug().Err(err).Uint64("stream", o.ID).Msg("stream ended")
	} else {
		s.mu.Lock()
		ss.markFinished(o.ID, st.Received())
		s.mu.Unlock()
	}
	done()
}

// drainClose ends a link whose hello failed without losing the reply: the
// daemon's sealed opens may already wait unread behind its proof, and a
// socket closed with unread bytes sends a reset, which can overtake the
// reply on its way. So the reply goes out with our FIN, and what the
// daemon sent is read and dropped until it closes, for a few seconds at
// most.
func drainClose(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(drainHello))
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, maxDrain))
}

// How long and how much a failed hello's link is read before it closes.
const (
	drainHello = 3 * time.Second
	maxDrain   = 4 << 20
)

// Close resets every stream and waits for them.
func (s *Server) Close() {
	s.mu.Lock()
	var all []*Stream
	for cancel := range s.watches {
		(*cancel)()
	}
	for _, ss := range s.sessions {
		if ss.live != nil {
			ss.live.Close()
		}
		if ss.forget != nil {
			ss.forget.Stop()
		}
		for _, e := range ss.streams {
			select {
			case <-e.ready:
				if e.st != nil {
					all = append(all, e.st)
				}
			default:
			}
		}
	}
	s.mu.Unlock()
	endAll(all, func(st *Stream) { st.fail(errors.New("agent shutting down"), false) })
	s.wg.Wait()
}
