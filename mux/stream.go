package mux

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spritefwd/spritefwd/sock"
)

// Carrier is one yamux stream. It carries a Stream until it fails; a
// Stream outlives its carriers.
type Carrier interface {
	io.ReadWriteCloser
	SetDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Buffer bounds.
const (
	DefaultBuffer = 64 << 20
	minBuffer     = 64 << 10
	maxBuffer     = 1 << 30
)

// Errors that end a stream; Stream.Err wraps one of them.
var (
	ErrResumeExpired = errors.New("the link was not back within resume_window")
	ErrPeerReset     = errors.New("reset by the other end")
	ErrLocalAborted  = errors.New("local connection failed")
	ErrUnknownStream = errors.New("the agent no longer has this stream (it restarted, or the stream had ended)")
	ErrLinkLost      = errors.New("link lost and resumption is off")
)

// StreamOptions tune a Stream. The zero value works.
type StreamOptions struct {
	// Buffer bounds the bytes sent but not yet acknowledged, which are kept
	// for replay: the stream's window, which bounds its throughput to a
	// window per round trip, grows up to it (see window).
	Buffer int
	// Budget is what the windows of many streams share beyond
	// StartWindow. Nil: the window is Buffer from the start.
	Budget *Budget
	// ResumeWindow is how long a stream whose carrier failed waits for a
	// new one before it resets. Zero resets at once.
	ResumeWindow time.Duration
	// DrainTimeout bounds the wait for the local socket to take delivered
	// bytes before a reset.
	DrainTimeout time.Duration
	Up, Down     *atomic.Int64 // bytes local→peer and peer→local
	// OnDetach runs on its own goroutine when the carrier fails and the
	// stream starts waiting for a new one.
	OnDetach func(*Stream)
	// OnResume is called with how long the stream was detached, each time
	// it moves to a new carrier.
	OnResume func(took time.Duration)
	// OnEnd is called once, when the stream has ended; Err says how.
	OnEnd func(*Stream)
	// LingerForPeer: after both FINs, wait for the peer to close the
	// carrier before ending (the daemon's side; see checkDone).
	LingerForPeer bool
}

// Stream is one TCP connection carried across carriers. It keeps what it
// sent until the peer acknowledges it, so that when a carrier dies the
// stream can continue on a new one from the peer's received count: nothing
// lost, nothing duplicated. Offsets count bytes; a FIN takes one offset, as
// in TCP.
type Stream struct {
	id    uint64
	local sock.Conn
	opts  StreamOptions
	host  string // the target, for an open sent again (see Session.Resume)
	port  int

	// Lock order: sendMu, then mu, never the other way round (lockBoth).
	// sendMu orders the frames on a carrier (the out pump's data, acks,
	// Attach's replay) and is held across carrier writes, which block while
	// yamux's window is full. mu is never held across I/O: the in pump
	// takes it for every frame, and must not wait on a blocked writer.
	sendMu sync.Mutex
	mu     sync.Mutex
	cond   sync.Cond // on mu: room in buf, detach, end

	// The rest is under mu.
	state  streamState   // changed only by to
	err    error         // why it ended, in stateReset
	car    *carrierState // nil while detached, and before the first Attach
	lostAt time.Time     // when the last carrier failed
	expire *time.Timer   // the resume window, while detached

	// Sending.
	buf       ring   // sent, unacknowledged: offsets [acked, acked+buf.len()); written only under sendMu and mu
	releasing bool   // a releaseIdle is on its way; not lifecycle, the store's
	acked     uint64 // the peer has everything below
	next      uint64 // the next offset to send
	finOff    uint64 // our FIN's offset, once the state has sentFin
	win       window // how much of buf may be in flight

	// Receiving.
	recv     uint64 // delivered to local; +1 once the peer's FIN is in
	ackSent  uint64
	ackDue   bool // an ack is scheduled on ackTimer; not lifecycle, pacing
	ackTimer *time.Timer

	// unconfirmed: the stream was opened where the agent may not have
	// read the open: on a session that had been quiet, whose ping sent
	// behind the open is not answered yet (see Client.probe), or on a link
	// before the agent had proved the secret (see Client.openEarly).
	unconfirmed atomic.Bool
	// early: a link has taken the stream to open behind its proof, or the
	// client has taken it back to open the usual way (claimEarly).
	early atomic.Bool
	// opening: Client.Open has not returned it yet, and will see to it
	// if it detaches meanwhile.
	opening atomic.Bool
	// on is the daemon's session the stream was last put on.
	on atomic.Pointer[Session]

	done chan struct{}
}

type carrierState struct {
	c    Carrier
	sent uint64        // offsets below this were written on c
	in   chan struct{} // closed when c's in pump returns
}

// lockBoth takes sendMu and mu in the lock order.
func (s *Stream) lockBoth() {
	s.sendMu.Lock()
	s.mu.Lock()
}

func (s *Stream) unlockBoth() {
	s.mu.Unlock()
	s.sendMu.Unlock()
}

// streamState is where a stream is in its life. The two directions close
// as in TCP: our FIN goes out once local reads EOF, the peer's comes in
// once its side does, and the stream is done when both are in and ours is
// acknowledged. Which carrier the stream is on is s.car, not a state: a
// stream can lose its carrier in any live state, and keeps its state while
// it waits for another; only stateLinger belongs to one carrier.
type streamState uint8

const (
	stateNew       streamState = iota // not attached yet
	stateOpen                         // data both ways
	stateLocalFin                     // local EOF: our FIN has its offset, the peer still sends
	stateRemoteFin                    // the peer's FIN is in, we still send
	stateBothFin                      // both FINs: done once ours is acknowledged
	stateLinger                       // done, our side of the carrier closed: waiting for the peer's close (LingerForPeer)
	stateClosed                       // ended cleanly
	stateReset                        // ended with Err
)

// transitions lists, for each state, the states it may move to. A lost
// carrier moves stateLinger back to stateBothFin: the stream must linger
// again on the next one, since the peer may not have seen our close.
var transitions = [...]uint16{
	stateNew:       1<<stateOpen | 1<<stateReset,
	stateOpen:      1<<stateLocalFin | 1<<stateRemoteFin | 1<<stateReset,
	stateLocalFin:  1<<stateBothFin | 1<<stateReset,
	stateRemoteFin: 1<<stateBothFin | 1<<stateReset,
	stateBothFin:   1<<stateLinger | 1<<stateClosed | 1<<stateReset,
	stateLinger:    1<<stateBothFin | 1<<stateClosed | 1<<stateReset,
	stateClosed:    0,
	stateReset:     0,
}

func (st streamState) String() string {
	if int(st) < len(transitions) {
		return [...]string{"new", "open", "local-fin", "remote-fin", "both-fin", "linger", "closed", "reset"}[st]
	}
	return fmt.Sprintf("state(%d)", uint8(st))
}

func (st streamState) ended() bool { return st == stateClosed || st == stateReset }

// sending: local may still give us bytes; no FIN of ours yet.
func (st streamState) sending() bool { return st == stateOpen || st == stateRemoteFin }

// receiving: the peer may still send bytes; its FIN is not in.
func (st streamState) receiving() bool { return st == stateOpen || st == stateLocalFin }

// sentFin: our FIN has its offset, finOff.
func (st streamState) sentFin() bool {
	return st == stateLocalFin || st == stateBothFin || st == stateLinger || st == stateClosed
}

func (st streamState) afterLocalFin() streamState {
	if st == stateRemoteFin {
		return stateBothFin
	}
	return stateLocalFin
}

func (st streamState) afterPeerFin() streamState {
	if st == stateLocalFin {
		return stateBothFin
	}
	return stateRemoteFin
}

// strict makes an illegal transition, or a function called without the
// lock it needs, panic. The package's tests set it; a daemon in use
// rejects the transition instead, rather than crash with every other
// stream, and an ended stream stays ended.
var strict bool

// to moves the stream to state next, under mu. It is the only writer of
// s.state. Entering an end state stops the resume window and wakes the out
// pump.
func (s *Stream) to(next streamState) {
	held(&s.mu)
	if transitions[s.state]&(1<<next) == 0 {
		if strict {
			panic(fmt.Sprintf("mux: stream %d: illegal transition %s → %s", s.id, s.state, next))
		}
		return
	}
	s.state = next
	if next.ended() {
		if s.expire != nil {
			s.expire.Stop()
		}
		s.cond.Broadcast()
	}
}

// setCarrier puts the stream on cs, or with nil detaches it, under mu.
func (s *Stream) setCarrier(cs *carrierState) {
	held(&s.mu)
	if s.state == stateLinger {
		s.to(stateBothFin)
	}
	s.car = cs
}

// held checks, when strict, that m is locked. It cannot tell by whom, so
// it catches a missing lock only when no one else holds m at the time.
func held(m *sync.Mutex) {
	if strict && m.TryLock() {
		m.Unlock()
		panic("mux: a lock the caller should hold is free")
	}
}

// NewStream returns a stream for local; Attach starts it.
func NewStream(id uint64, local sock.Conn, opts StreamOptions) *Stream {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	opts.Buffer = max(opts.Buffer, minBuffer)
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	s := &Stream{id: id, local: local, opts: opts, done: make(chan struct{})}
	s.win = newWindow(opts.Budget, opts.Buffer)
	s.cond.L = &s.mu
	return s
}

// ID is the stream's id, unique within its session.
func (s *Stream) ID() uint64 { return s.id }

// Done is closed when the stream has ended, cleanly or not.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err is nil after a clean end (both sides sent FIN and were acknowledged).
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Received is the count the stream would resume from: bytes delivered to
// local, plus one after the peer's FIN. Stable only while detached.
func (s *Stream) Received() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recv
}

// Detached reports whether the stream lost its carrier and waits for a
// new one. A stream not yet attached the first time is not detached.
func (s *Stream) Detached() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state != stateNew && !s.state.ended() && s.car == nil
}

// lostWith reports whether the stream is detached, or about to be: its
// session has died, and its in pump is on the way to noticing.
func (s *Stream) lostWith() bool {
	if s.Detached() {
		return true
	}
	on := s.on.Load()
	if on == nil || !on.dead() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state != stateNew && !s.state.ended()
}

// reopens reports whether the stream may open again on an agent that does
// not know its session (a restarted one): its open went out on a session
// that then failed its probe, and nothing of it came back, neither a byte
// nor an acknowledgement. An agent that had taken the open would have
// answered the ping right behind it, unless it died in that instant; one
// that answered anything of the stream certainly had it, and a second
// open would deliver its first bytes twice.
func (s *Stream) reopens() bool {
	if !s.unconfirmed.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.state.ended() && s.recv == 0 && s.acked == 0
}

// claimEarly takes the stream for one early open, or for the usual
// way: only the first caller gets it.
func (s *Stream) claimEarly() bool { return s.early.CompareAndSwap(false, true) }

// started reports that the stream has been attached: its pumps have run.
func (s *Stream) started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state != stateNew
}

// Attach puts the stream on carrier c, one of link p's (nil: the stream
// measures the link alone; see Path). peerRecv is the peer's received
// count (0 for a new stream); everything from there on is replayed. With
// reply, Attach first tells the peer our received count (the agent's answer
// to a resume). A previous carrier is aborted, and its in pump finished,
// before anything is written, so two carriers never deliver at once.
func (s *Stream) Attach(c Carrier, p *Path, peerRecv uint64, reply bool) error {
	s.leaveCarrier()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	cs, r, first, err := s.adopt(c, p, peerRecv)
	if err != nil {
		return err
	}
	// The peer's count may acknowledge our FIN: then there is nothing left
	// but to close, and that must be decided before the in pump can read
	// the peer's close.
	s.checkDone()
	// The in pump starts before the replay is written: the peer may be
	// replaying to us at the same time, and neither may wait on the other.
	go s.pumpIn(cs)
	if err := r.write(c, reply); err != nil {
		abortCarrier(c) // the in pump sees it fail and detaches again
	}
	if first {
		go s.pumpOut()
	}
	return nil
}

// leaveCarrier detaches the stream from its carrier, if it has one, and
// waits for that carrier's in pump to return.
func (s *Stream) leaveCarrier() {
	s.mu.Lock()
	old := s.car
	s.setCarrier(nil)
	s.mu.Unlock()
	if old == nil {
		return
	}
	// The old in pump may be blocked writing to local, on a target that
	// waits for us to read its reply, which waits for acks that only this
	// attach can bring. A deadline frees it; what it wrote counts, and the
	// peer replays the rest.
	abortCarrier(old.c)
	_ = s.local.SetWriteDeadline(time.Unix(1, 0))
	<-old.in
	_ = s.local.SetWriteDeadline(time.Time{})
}

// adopt checks the peer's count against what we sent, makes c the
// stream's carrier, and returns what c must be sent first. first reports
// the stream's first carrier. The caller holds sendMu until the replay is
// written: no push can move or overwrite its bytes before then, and acks
// only drop from the front. On error c is closed.
func (s *Stream) adopt(c Carrier, p *Path, peerRecv uint64) (cs *carrierState, r replay, first bool, err error) {
	held(&s.sendMu)
	s.mu.Lock()
	if s.state.ended() {
		err := s.err
		s.mu.Unlock()
		c.Close()
		return nil, replay{}, false, fmt.Errorf("stream %d already ended: %w", s.id, err)
	}
	if peerRecv < s.acked || peerRecv > s.next {
		s.mu.Unlock()
		err := fmt.Errorf("%w: stream %d: peer has %d bytes, but we sent %d and it acknowledged %d", ErrProtocol, s.id, peerRecv, s.next, s.acked)
		c.Close()
		s.fail(err, false)
		return nil, replay{}, false, err
	}
	s.ackLocked(peerRecv)
	s.win.on(p)
	r = replay{recv: s.recv, base: s.acked, fin: s.state.sentFin(), finOff: s.finOff}
	r.data[0], r.data[1] = s.buf.segments()
	cs = &carrierState{c: c, in: make(chan struct{}), sent: s.next}
	s.setCarrier(cs)
	if s.expire != nil {
		s.expire.Stop()
	}
	s.ackSent = max(s.ackSent, r.recv)
	first = s.state == stateNew
	if first {
		s.to(stateOpen)
	}
	lostAt := s.lostAt
	s.mu.Unlock()
	if !lostAt.IsZero() && s.opts.OnResume != nil {
		s.opts.OnResume(time.Since(lostAt))
	}
	return cs, r, first, nil
}

// replay is what a new carrier is sent before anything else: with reply,
// our received count, then everything from the peer's count on. The data
// slices are the ring's store, valid while sendMu is held.
type replay struct {
	recv   uint64 // our received count: the ack every frame carries
	base   uint64 // the offset of data[0]
	data   [2][]byte
	fin    bool // our FIN, at finOff, follows the data
	finOff uint64
}

func (r replay) write(c Carrier, reply bool) error {
	if reply {
		if err := writeFrame(c, frame{typ: frameResumed, b: r.recv}, nil); err != nil {
			return err
		}
	}
	off := r.base
	for _, seg := range r.data {
		for len(seg) > 0 {
			chunk := seg[:min(maxChunk, len(seg))]
			if err := writeFrame(c, frame{typ: frameData, a: off, b: r.recv}, chunk); err != nil {
				return err
			}
			off += uint64(len(chunk))
			seg = seg[len(chunk):]
		}
	}
	if r.fin {
		return writeFrame(c, frame{typ: frameFin, a: r.finOff, b: r.recv}, nil)
	}
	return nil
}

// Reset ends the stream abnormally: the peer is told, and the local
// connection gets the bytes already delivered, then a reset.
func (s *Stream) Reset(err error) { s.fail(err, true) }

// Buffers for the out pump, which holds one while blocked in Read: start
// small for idle connections, grow with the traffic.
const smallChunk = 512

var (
	smallFrames = sync.Pool{New: func() any { b := make([]byte, headerLen+smallChunk); return &b }}
	largeFrames = sync.Pool{New: func() any { b := make([]byte, headerLen+maxChunk); return &b }}
)

// pumpOut reads the local connection and sends what it reads.
func (s *Stream) pumpOut() {
	pool := &smallFrames
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	for {
		s.mu.Lock()
		// A full buffer stops reading, attached or not: the client's writes
		// then wait in its own socket, as TCP flow control would have them.
		// While detached, that holds until the link is back or the resume
		// window expires; a bulk transfer survives a drop, and memory stays
		// bounded by the stream's window.
		for !s.state.ended() && s.buf.len()+maxChunk > s.win.size {
			s.cond.Wait()
		}
		ended := s.state.ended()
		s.mu.Unlock()
		if ended {
			return
		}
		b := *bp
		n, err := s.local.Read(b[headerLen:])
		if n > 0 {
			if s.opts.Up != nil {
				s.opts.Up.Add(int64(n))
			}
			off, ok := s.enqueue(b[headerLen : headerLen+n])
			if !ok {
				return
			}
			s.sendData(off, b[:headerLen+n])
			if pool == &smallFrames && n == smallChunk {
				pool.Put(bp)
				pool = &largeFrames
				bp = pool.Get().(*[]byte)
			}
		}
		if err == io.EOF {
			s.localEOF()
			return
		}
		if err != nil {
			s.fail(fmt.Errorf("%w: %w", ErrLocalAborted, err), true)
			return
		}
	}
}

// enqueue keeps p for replay and assigns its offset. pumpOut made room
// before it read p. It holds sendMu as well as mu, because it may move the
// buffer's bytes, and a replay (which holds sendMu) reads them unlocked.
func (s *Stream) enqueue(p []byte) (uint64, bool) {
	s.lockBoth()
	defer s.unlockBoth()
	if s.state.ended() {
		return 0, false
	}
	s.buf.push(p, s.win.reach(), s.opts.Buffer)
	off := s.next
	s.next += uint64(len(p))
	s.win.sent(s.next, s.acked, time.Now())
	return off, true
}

// releaseIdle returns an empty buffer's store to its pool, once an ack
// has emptied it: an idle stream holds no buffer, and a busy one gets it
// back from the pool without allocating.
func (s *Stream) releaseIdle() {
	s.lockBoth()
	defer s.unlockBoth()
	s.releasing = false
	s.buf.release()
}

// sendData writes a data frame (header space at the front of b) unless the
// carrier already has it, from a replay.
func (s *Stream) sendData(off uint64, b []byte) {
	n := uint64(len(b) - headerLen)
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	cs, recv := s.car, s.recv
	s.mu.Unlock()
	if cs == nil || cs.sent >= off+n {
		return
	}
	frame{typ: frameData, a: off, b: recv, n: uint32(n)}.put(b)
	if _, err := cs.c.Write(b); err != nil {
		abortCarrier(cs.c)
		return
	}
	s.mu.Lock()
	cs.sent = off + n
	s.ackSent = max(s.ackSent, recv)
	s.mu.Unlock()
}

func (s *Stream) localEOF() {
	s.mu.Lock()
	if !s.state.sending() {
		s.mu.Unlock()
		return // reset meanwhile
	}
	s.finOff = s.next
	s.next++
	s.to(s.state.afterLocalFin())
	s.mu.Unlock()
	s.sendMu.Lock()
	s.mu.Lock()
	cs, recv := s.car, s.recv
	s.mu.Unlock()
	if cs != nil && cs.sent <= s.finOff {
		if err := writeFrame(cs.c, frame{typ: frameFin, a: s.finOff, b: recv}, nil); err != nil {
			abortCarrier(cs.c)
		} else {
			s.mu.Lock()
			cs.sent = s.finOff + 1
			s.ackSent = max(s.ackSent, recv)
			s.mu.Unlock()
		}
	}
	s.sendMu.Unlock()
	s.checkDone()
}

// ackEvery is how much the receiver takes in before it acknowledges at
// once; smaller amounts wait ackDelay, or ride on data going the other way.
// A growing window starts at StartWindow, and must be acknowledged
// several times a round trip to grow from there.
func (s *Stream) ackEvery() uint64 { return uint64(min(max(s.opts.Buffer/8, 16<<10), StartWindow/4)) }

const ackDelay = 20 * time.Millisecond

// pumpIn reads frames from one carrier and delivers them. It never writes
// to the carrier itself (acks go out on a timer's goroutine), so two peers
// each blocked on a full window cannot deadlock.
func (s *Stream) pumpIn(cs *carrierState) {
	defer close(cs.in)
	hdr := make([]byte, headerLen)
	for {
		s.mu.Lock()
		current := s.car == cs
		s.mu.Unlock()
		if !current {
			return // replaced: frames still buffered on cs are replayed on the new one
		}
		f, err := readFrame(cs.c, hdr)
		if err == io.EOF && s.peerClosed(cs) {
			return
		}
		if err != nil {
			s.lost(cs, err)
			return
		}
		switch f.typ {
		case frameData:
			if err := s.deliver(cs, f); err != nil {
				return
			}
		case frameAck:
			s.ack(f.b)
		case frameFin:
			s.ack(f.b)
			s.mu.Lock()
			switch {
			case f.a == s.recv && s.state.receiving():
				s.to(s.state.afterPeerFin())
				s.recv++
				s.mu.Unlock()
				_ = s.local.CloseWrite()
				s.scheduleAck(0)
				s.checkDone()
			case f.a > s.recv:
				s.mu.Unlock()
				s.fail(fmt.Errorf("%w: fin at %d, but only %d bytes arrived", ErrProtocol, f.a, s.recv), true)
				return
			default:
				s.mu.Unlock() // a replayed FIN we already have
			}
		case frameReset:
			reason := make([]byte, f.n)
			_, _ = io.ReadFull(cs.c, reason)
			s.fail(&PeerResetError{Code: ResetCode(f.a), Reason: string(reason)}, false)
			return
		default:
			s.fail(fmt.Errorf("%w: unexpected %s frame", ErrProtocol, f.typ), true)
			return
		}
	}
}

var payloads = sync.Pool{New: func() any { b := make([]byte, maxChunk); return &b }}

// deliver writes a data frame's new bytes to local. Bytes below recv are a
// replay of what we already have, and are skipped.
func (s *Stream) deliver(cs *carrierState, f frame) error {
	s.ack(f.b)
	s.mu.Lock()
	recv := s.recv
	s.mu.Unlock()
	if f.a > recv {
		err := fmt.Errorf("%w: data at %d, but only %d bytes arrived", ErrProtocol, f.a, recv)
		s.fail(err, true)
		return err
	}
	skip := recv - f.a
	bp := payloads.Get().(*[]byte)
	defer payloads.Put(bp)
	for left := uint64(f.n); left > 0; {
		b := (*bp)[:min(left, uint64(len(*bp)))]
		if _, err := io.ReadFull(cs.c, b); err != nil {
			s.lost(cs, err)
			return err
		}
		left -= uint64(len(b))
		if skip >= uint64(len(b)) {
			skip -= uint64(len(b))
			continue
		}
		b = b[skip:]
		skip = 0
		n, err := s.local.Write(b)
		if s.opts.Down != nil {
			s.opts.Down.Add(int64(n))
		}
		s.mu.Lock()
		s.recv += uint64(n)
		due := s.recv-s.ackSent >= s.ackEvery()
		current := s.car == cs
		s.mu.Unlock()
		if err != nil {
			if !current {
				return err // Attach interrupted us to move to a new carrier
			}
			err = fmt.Errorf("%w: %w", ErrLocalAborted, err)
			s.fail(err, true)
			return err
		}
		if due {
			s.scheduleAck(0)
		} else {
			s.scheduleAck(ackDelay)
		}
	}
	return nil
}

// scheduleAck sends an ack after delay, unless one is already due sooner.
// An ack that is due now overrides a delayed one: a sender whose buffer is
// full waits for it, and a 20 ms wait per buffer caps the stream at
// buffer/20ms (found by profiling: 1.5 Gbit/s at 4 MiB, CPU half idle).
func (s *Stream) scheduleAck(delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.ended() {
		return
	}
	if s.ackDue {
		if delay == 0 && s.ackTimer != nil && s.ackTimer.Stop() {
			go s.sendAck()
		}
		return
	}
	s.ackDue = true
	if s.ackTimer == nil {
		s.ackTimer = time.AfterFunc(delay, s.sendAck)
	} else {
		s.ackTimer.Reset(delay)
	}
}

func (s *Stream) sendAck() {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	s.ackDue = false
	cs, recv := s.car, s.recv
	if cs == nil || s.state == stateLinger || recv <= s.ackSent || s.state.ended() {
		s.mu.Unlock()
		return // (a lingering carrier took the final ack with it)
	}
	s.mu.Unlock()
	if err := writeFrame(cs.c, frame{typ: frameAck, b: recv}, nil); err != nil {
		abortCarrier(cs.c)
		return
	}
	s.mu.Lock()
	s.ackSent = max(s.ackSent, recv)
	s.mu.Unlock()
}

func (s *Stream) ack(a uint64) {
	s.mu.Lock()
	s.ackLocked(a)
	done := s.doneLocked()
	s.mu.Unlock()
	if done {
		s.checkDone()
	}
}

func (s *Stream) ackLocked(a uint64) {
	held(&s.mu)
	if a <= s.acked || a > s.next {
		return // old, or a claim beyond what we sent: ignore
	}
	trim := min(a, s.acked+uint64(s.buf.len())) - s.acked
	s.buf.drop(int(trim))
	s.win.acked(a, s.buf.len(), time.Now())
	if s.buf.len() == 0 {
		s.win.idle()
	}
	if s.buf.len() == 0 && s.buf.store != nil && !s.releasing {
		// Everything sent is acknowledged: give the store back, so a stream
		// that has gone quiet holds none. (Its bytes may be read by a
		// replay under sendMu, which releaseIdle takes.)
		s.releasing = true
		go s.releaseIdle()
	}
	s.acked = a
	s.cond.Broadcast()
}

// lost handles a carrier that failed: detach and wait for another.
func (s *Stream) lost(cs *carrierState, err error) {
	abortCarrier(cs.c)
	s.mu.Lock()
	if s.state.ended() || s.car != cs {
		s.mu.Unlock()
		return
	}
	s.setCarrier(nil)
	s.lostAt = time.Now()
	s.cond.Broadcast()
	if s.opts.ResumeWindow <= 0 {
		s.finishAndUnlock(fmt.Errorf("%w: %w", ErrLinkLost, err), false)
		return
	}
	if s.expire == nil {
		s.expire = time.AfterFunc(s.opts.ResumeWindow, s.expired)
	} else {
		s.expire.Reset(s.opts.ResumeWindow)
	}
	s.mu.Unlock()
	if s.opts.OnDetach != nil {
		go s.opts.OnDetach(s)
	}
}

func (s *Stream) expired() {
	s.mu.Lock()
	if s.car != nil || s.state.ended() {
		s.mu.Unlock()
		return
	}
	s.finishAndUnlock(fmt.Errorf("%w (%s)", ErrResumeExpired, s.opts.ResumeWindow), false)
}

// doneLocked reports that both FINs are in and ours is acknowledged.
func (s *Stream) doneLocked() bool {
	held(&s.mu)
	return s.state == stateBothFin && s.acked == s.finOff+1
}

// checkDone ends the stream cleanly once both FINs are in and acknowledged.
// Our ack of the peer's FIN goes out before the carrier closes, or the peer
// would wait for it on a dead carrier.
//
// Whoever sends the last ack cannot know it arrived. The agent's answer is
// a record of finished streams (see Server); the daemon's, with
// LingerForPeer, is to half-close the carrier and end only when the agent
// closes its side (peerClosed), which it does only once it is done too. If
// the carrier dies first, the daemon resumes, and the agent finishes or
// answers from its record.
func (s *Stream) checkDone() {
	s.mu.Lock()
	if !s.doneLocked() {
		s.mu.Unlock()
		return
	}
	if !s.opts.LingerForPeer {
		s.finishAndUnlock(nil, false)
		return
	}
	cs := s.car
	if cs == nil {
		s.mu.Unlock()
		return // lingers on the next carrier, after a resume
	}
	s.to(stateLinger)
	s.mu.Unlock()
	go s.closeCarrier(cs)
}

// peerClosed ends a lingering stream when the agent closes the carrier
// after both FINs: it is done as well.
func (s *Stream) peerClosed(cs *carrierState) bool {
	s.mu.Lock()
	if s.state != stateLinger || s.car != cs {
		s.mu.Unlock()
		return false
	}
	s.finishAndUnlock(nil, false)
	return true
}

// fail ends the stream with err. With notifyPeer the peer gets a reset
// frame; the local connection gets what was delivered, then a reset.
func (s *Stream) fail(err error, notifyPeer bool) {
	s.mu.Lock()
	s.finishAndUnlock(err, notifyPeer)
}

// finishAndUnlock is where every stream ends, and the only way into
// stateClosed (err nil) or stateReset. The caller holds mu and has decided
// under it that the stream is over; the decision and the end are one step,
// so that two goroutines cannot both end the stream, and mu is released
// here, before the teardown's I/O. Ending an ended stream does nothing.
//
// A clean end closes the local connection. A failure gives it what was
// delivered, then a reset, and with notifyPeer sends the peer a reset frame.
func (s *Stream) finishAndUnlock(err error, notifyPeer bool) {
	if s.state.ended() {
		s.mu.Unlock()
		return
	}
	from, cs := s.state, s.car
	s.win.end()
	if err != nil {
		s.err, s.car = err, nil
		s.to(stateReset)
	} else {
		s.to(stateClosed)
	}
	s.mu.Unlock()
	switch {
	case err != nil:
		if cs != nil {
			s.resetCarrier(cs, err, notifyPeer)
		}
		sock.Abort(s.local, s.opts.DrainTimeout)
		s.signalEnd()
	case from == stateLinger:
		// Our side of the carrier closed on the way into stateLinger, and
		// the peer has closed its side.
		s.local.Close()
		s.signalEnd()
	default:
		// The final ack needs sendMu, which a writer blocked on the
		// peer's window may hold; the in pump must not wait for it.
		go func() {
			if cs != nil {
				s.closeCarrier(cs)
			}
			s.local.Close()
			s.signalEnd()
		}()
	}
}

// closeCarrier sends our ack of the peer's FIN, unless it went out
// already, and half-closes the carrier.
func (s *Stream) closeCarrier(cs *carrierState) {
	s.sendMu.Lock()
	s.mu.Lock()
	recv, due := s.recv, s.recv > s.ackSent
	s.mu.Unlock()
	if due {
		_ = writeFrame(cs.c, frame{typ: frameAck, b: recv}, nil)
	}
	s.sendMu.Unlock()
	cs.c.Close()
}

// resetCarrier ends a failed stream's carrier, telling the peer why with
// notifyPeer.
func (s *Stream) resetCarrier(cs *carrierState, err error, notifyPeer bool) {
	if !notifyPeer {
		abortCarrier(cs.c)
		return
	}
	go func() {
		// A writer blocked on a full window would hold sendMu for ever;
		// the deadline frees it.
		_ = cs.c.SetWriteDeadline(time.Now().Add(time.Second))
		s.sendMu.Lock()
		reason := []byte(err.Error())
		_ = writeFrame(cs.c, frame{typ: frameReset}, reason[:min(len(reason), maxReason)])
		s.sendMu.Unlock()
		abortCarrier(cs.c)
	}()
}

func (s *Stream) signalEnd() {
	close(s.done)
	if s.opts.OnEnd != nil {
		s.opts.OnEnd(s)
	}
}

// abortCarrier unblocks the carrier's reader and writer and closes it.
// Close alone is a half-close in yamux, which would leave Read blocked.
func abortCarrier(c Carrier) {
	_ = c.SetDeadline(time.Now())
	_ = c.Close()
}
