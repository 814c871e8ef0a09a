package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"
)

// Session is the daemon's end of one link to the agent.
type Session struct {
	ys   *yamux.Session
	link *coalescer
	// rtt is the last round trip measured to the agent, in nanoseconds:
	// the handshake's at first (an overestimate: it may take two), then
	// each answered ping's. It sizes a probe's patience (ProbeTimeout).
	rtt atomic.Int64
}

// Dial shakes hands with the agent over link and starts a yamux client on
// it. resumed reports that the agent still holds h.Session's streams. On
// error the link is closed.
func Dial(ctx context.Context, link io.ReadWriteCloser, secret string, h Hello, log zerolog.Logger) (*Session, bool, error) {
	stop := context.AfterFunc(ctx, func() { link.Close() })
	start := time.Now()
	resumed, err := ClientHello(link, secret, h)
	took := time.Since(start)
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		link.Close()
		return nil, false, err
	}
	lc := &coalescer{ReadWriteCloser: link}
	lc.lastRead.Store(time.Now().UnixNano())
	ys, err := yamux.Client(lc, yamuxConfig(log))
	if err != nil {
		link.Close()
		return nil, false, err
	}
	s := &Session{ys: ys, link: lc}
	s.rtt.Store(int64(took))
	return s, resumed, nil
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
	return st.Attach(c, 0, false)
}

// Resume moves a detached stream onto this session. It costs one round
// trip: the agent answers with how much it has received.
func (s *Session) Resume(ctx context.Context, st *Stream) error {
	c, err := s.ys.OpenStream()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { abortCarrier(c) })
	defer stop()
	if err := writeFrame(c, frame{typ: frameResume, a: st.id, b: st.Received()}, nil); err != nil {
		abortCarrier(c)
		return err
	}
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
		return st.Attach(c, f.b, false)
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

// Probe bounds: a probe waits a few of the session's round trips for the
// answer, and at least minProbeTimeout (a busy agent's scheduler, a jittery
// Wi-Fi), at most probeTimeout.
const (
	minProbeTimeout = time.Second
	probeTimeout    = 5 * time.Second
)

// ProbeTimeout is how long a ping on this session may take before the
// session is judged dead: 3 round trips and half a second, within
// [minProbeTimeout, probeTimeout]. A live agent answers in one round trip;
// a false verdict costs a redial and a resume, not data.
func (s *Session) ProbeTimeout() time.Duration {
	return min(max(3*time.Duration(s.rtt.Load())+500*time.Millisecond, minProbeTimeout), probeTimeout)
}

// Quiet is how long the link has delivered nothing.
func (s *Session) Quiet() time.Duration {
	return time.Since(time.Unix(0, s.link.lastRead.Load()))
}

// Done is closed when the session has failed or closed.
func (s *Session) Done() <-chan struct{} { return s.ys.CloseChan() }

// Close ends the session and its link.
func (s *Session) Close() error {
	err := s.ys.Close()
	s.link.Close()
	return err
}
