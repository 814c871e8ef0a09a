package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"
)

// Session is the daemon's end of one link to the agent.
type Session struct {
	ys   *yamux.Session
	link *coalescer
	// early holds the carriers of resumes sent with the hello, by stream.
	earlyMu sync.Mutex
	early   map[uint64]*yamux.Stream
	// rtt is the last round trip measured to the agent, in nanoseconds:
	// the handshake's at first (an overestimate: it may take two), then
	// each answered ping's. It sizes a probe's patience (ProbeTimeout).
	rtt atomic.Int64
	// path is what the streams' windows learn of the link together.
	path Path
}

// Dial shakes hands with the agent over link and starts a yamux client on
// it. resumed reports that the agent still holds h.Session's streams. On
// error the link is closed.
//
// Nothing waits for the agent's proof that need not: right behind our own
// go the resume frames of h.Resume, and the opens of new streams waiting
// for this session, with their first bytes, so that a redial costs the
// resume exchange no round trip of its own, and a new link's first
// connection none of the proofs'. Until the agent's proof is checked all of
// it is sealed (see sealer), and yamux reads nothing from the link. The
// carriers of the resumes wait in the session for Resume.
func Dial(ctx context.Context, link io.ReadWriteCloser, secret string, h Hello, log zerolog.Logger) (*Session, bool, error) {
	stop := context.AfterFunc(ctx, func() { link.Close() })
	start := time.Now()
	var (
		sl      *sealer
		lc      *coalescer
		s       *Session
		resumed bool
		opened  []*Stream
	)
	p, err := clientProve(link, secret, h)
	took := time.Since(start) // a round trip, or two if the agent's greeting was late
	if err == nil {
		sl = newSealer(link, p.sealKey(secret))
		lc = gated(sl)
		var ys *yamux.Session
		if ys, err = yamux.Client(lc, yamuxConfig(log)); err == nil {
			s = &Session{ys: ys, link: lc}
			// The agent's answer is read while the opens go out: a peer that
			// stops reading must not hold its verdict back behind them.
			piped := make(chan []*Stream, 1)
			go func() { piped <- s.pipeline(h, log) }()
			resumed, err = p.verify(link, secret)
			if err != nil {
				ys.Close() // frees the pipeline's writes
			}
			opened = <-piped
		}
	}
	if err == nil {
		err = sl.finish()
	}
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		if s != nil {
			s.ys.Close()
		}
		link.Close()
		if !lacksSecret(err) {
			// Whatever answered may have proved the secret and carried the
			// opens to their targets: only its session may take them again,
			// never an agent that does not know it.
			for _, st := range opened {
				st.unconfirmed.Store(false)
			}
		}
		return nil, false, err
	}
	lc.lastRead.Store(time.Now().UnixNano())
	lc.open()
	s.rtt.Store(int64(took))
	return s, resumed, nil
}

// maxEarly bounds the resumes and opens sent ahead of the agent's proof:
// yamux blocks an open once AcceptBacklog opens await the peer's reply,
// which cannot be read until then. The rest go the usual way.
const maxEarly = 256

// pipeline sends a resume frame for each stream in h.Resume on a carrier
// of its own, and opens the streams of h.open that no earlier link took.
func (s *Session) pipeline(h Hello, log zerolog.Logger) (opened []*Stream) {
	s.earlyMu.Lock()
	s.early = map[uint64]*yamux.Stream{}
	s.earlyMu.Unlock()
	n := 0
	for _, r := range h.Resume {
		if n == maxEarly {
			return opened
		}
		c, err := s.ys.OpenStream()
		if err != nil {
			return opened
		}
		if err := writeFrame(c, frame{typ: frameResume, a: r.ID, b: r.Received}, nil); err != nil {
			abortCarrier(c)
			return opened
		}
		s.earlyMu.Lock()
		s.early[r.ID] = c
		s.earlyMu.Unlock()
		n++
	}
	for _, o := range h.open {
		if n == maxEarly {
			return opened
		}
		if !o.st.claimEarly() {
			continue
		}
		if err := s.Open(o.st, o.host, o.port); err != nil {
			log.Debug().Err(err).Msg("early open failed; the stream opens once the session is up")
			return opened
		}
		opened = append(opened, o.st)
		n++
	}
	return opened
}

// takeEarly returns the carrier whose resume frame for stream id went out
// with the hello, if one did and it is still unclaimed.
func (s *Session) takeEarly(id uint64) *yamux.Stream {
	s.earlyMu.Lock()
	defer s.earlyMu.Unlock()
	c := s.early[id]
	delete(s.early, id)
	return c
}

// DropEarly aborts the carriers of early resumes no stream claimed (it
// ended meanwhile, or the agent did not know the session): the agent sees
// them fail, and its streams wait on, or reset, as after any drop.
func (s *Session) DropEarly() {
	s.earlyMu.Lock()
	early := s.early
	s.early = nil
	s.earlyMu.Unlock()
	for _, c := range early {
		abortCarrier(c)
	}
}

// Open starts a new stream to host:port inside the sprite. It does not
// wait for the agent: the open frame and the first data leave together,
// and a failed dial comes back as a reset.
func (s *Session) Open(st *Stream, host string, port int) error {
	st.host, st.port = host, port
	c, err := s.ys.OpenStream()
	if err != nil {
		return err
	}
	if err := writeFrame(c, frame{typ: frameOpen, a: st.id, b: uint64(port)}, []byte(host)); err != nil {
		abortCarrier(c)
		return err
	}
	st.on.Store(s)
	return st.Attach(c, &s.path, 0, false)
}

// Resume moves a detached stream onto this session. It costs one round
// trip, the agent's answer with how much it has received, unless the
// resume went out with the hello (Hello.Resume): then the answer is
// already on its way.
func (s *Session) Resume(ctx context.Context, st *Stream) error {
	// An early resume's count may be below the stream's count now (it was
	// taken as the stream was detaching): the replay then repeats bytes we
	// have, and deliver skips them.
	c := s.takeEarly(st.id)
	if c == nil {
		var err error
		if c, err = s.ys.OpenStream(); err != nil {
			return err
		}
		if err := writeFrame(c, frame{typ: frameResume, a: st.id, b: st.Received()}, nil); err != nil {
			abortCarrier(c)
			return err
		}
	}
	stop := context.AfterFunc(ctx, func() { abortCarrier(c) })
	defer stop()
	var hdr [headerLen]byte
	f, err := readFrame(c, hdr[:])
	if err != nil {
		abortCarrier(c)
		return err
	}
	// The agent answered: it has the stream, or knows it does not and the
	// open below is the one that counts. Either way no earlier open may be
	// sent again on some later agent.
	st.unconfirmed.Store(false)
	switch f.typ {
	case frameResumed:
		st.on.Store(s)
		return st.Attach(c, &s.path, f.b, false)
	case frameReset:
		reason := make([]byte, f.n)
		_, _ = io.ReadFull(c, reason)
		abortCarrier(c)
		if ResetCode(f.a) == ResetNotSeen {
			// The open frame was lost with the old link: the agent never
			// saw this stream, so opening it again duplicates nothing.
			return s.Open(st, st.host, st.port)
		}
		err := ErrUnknownStream
		if string(reason) != err.Error() {
			err = fmt.Errorf("%w: %s", err, reason)
		}
		st.fail(err, false)
		return nil
	}
	abortCarrier(c)
	return fmt.Errorf("%w: resume answered with %s", ErrProtocol, f.typ)
}

// Ping measures a round trip to the agent itself (not just the API edge),
// giving up after timeout. A failed ping closes the session.
func (s *Session) Ping(timeout time.Duration) (time.Duration, error) {
	type result struct {
		rtt time.Duration
		err error
	}
	ch := make(chan result, 1)
	go func() {
		rtt, err := s.ys.Ping()
		ch <- result{rtt, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			s.Close()
		} else {
			s.rtt.Store(int64(r.rtt))
		}
		return r.rtt, r.err
	case <-t.C:
		s.Close() // the ping goroutine returns when the session closes
		return 0, fmt.Errorf("agent did not answer a ping within %s", timeout)
	}
}

// Alive waits for a sign of life from the agent: the answer to a ping, or
// anything the link delivers after the ping went out, since on a busy link
// the answer queues behind data at both ends. No sign within timeout
// closes the session.
func (s *Session) Alive(timeout time.Duration) error {
	sent := time.Now().UnixNano()
	answer := make(chan error, 1)
	go func() {
		rtt, err := s.ys.Ping() // returns when the session closes, if not before
		if err == nil {
			s.rtt.Store(int64(rtt))
		}
		answer <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	tick := time.NewTicker(min(timeout/20, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case err := <-answer:
			if err != nil {
				s.Close()
			}
			return err
		case <-tick.C:
			if s.link.lastRead.Load() > sent {
				return nil
			}
		case <-t.C:
			s.Close()
			return fmt.Errorf("agent did not answer a ping within %s", timeout)
		}
	}
}

// Probe bounds: a probe waits a few of the session's round trips for the
// answer, and at least minProbeTimeout (a starved CPU at either end, a
// jittery Wi-Fi), at most probeTimeout.
const (
	minProbeTimeout = 2 * time.Second
	probeTimeout    = 5 * time.Second
)

// ProbeTimeout is how long a ping on this session may take before the
// session is judged dead: 4 round trips and a second, within
// [minProbeTimeout, probeTimeout]. A live agent answers in one round trip;
// a false verdict costs a redial and a resume of every stream, not data.
func (s *Session) ProbeTimeout() time.Duration {
	return min(max(4*time.Duration(s.rtt.Load())+time.Second, minProbeTimeout), probeTimeout)
}

// Quiet is how long the link has delivered nothing.
func (s *Session) Quiet() time.Duration {
	return time.Since(time.Unix(0, s.link.lastRead.Load()))
}

// dead reports that the session has failed or closed.
func (s *Session) dead() bool {
	select {
	case <-s.ys.CloseChan():
		return true
	default:
		return false
	}
}

// Done is closed when the session has failed or closed.
func (s *Session) Done() <-chan struct{} { return s.ys.CloseChan() }

// Close ends the session and its link.
func (s *Session) Close() error {
	err := s.ys.Close()
	s.link.Close()
	return err
}
