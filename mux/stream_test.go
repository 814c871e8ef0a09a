package mux

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

func TestMain(m *testing.M) {
	strict = true
	goleak.VerifyTestMain(m)
}

// dupConn duplicates some whole frames, as a replay after a reconnect can.
// Each Write on a carrier is exactly one frame.
type dupConn struct {
	net.Conn
	rng *rand.Rand
	mu  *sync.Mutex
}

func (d dupConn) Write(p []byte) (int, error) {
	n, err := d.Conn.Write(p)
	d.mu.Lock()
	dup := len(p) >= headerLen && d.rng.IntN(20) == 0
	d.mu.Unlock()
	if err == nil && dup && frameType(p[0]) != frameResumed {
		_, _ = d.Conn.Write(p)
	}
	return n, err
}

func TestStreamSurvivesRandomDrops(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		t.Run("", func(t *testing.T) { streamDropRun(t, seed, seed%3 == 0, nil) })
	}
}

// With windows that grow from StartWindow on a budget, whatever was in
// flight when a carrier dropped is still replayed; the windows grow, never
// past the budget, and give it all back when the streams end.
func TestStreamGrowingWindowSurvivesRandomDrops(t *testing.T) {
	grew := 0
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run("", func(t *testing.T) {
			b := NewBudget(768 << 10)
			var peak atomic.Int64
			stop := make(chan struct{})
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				for {
					peak.Store(max(peak.Load(), b.Used()))
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Microsecond):
					}
				}
			}()
			streamDropRun(t, seed, seed%3 == 0, b)
			close(stop)
			<-watched
			if peak.Load() > 768<<10 {
				t.Fatalf("the windows held %d of a budget of %d", peak.Load(), 768<<10)
			}
			if b.Used() != 0 {
				t.Fatalf("the streams ended holding %d of the budget", b.Used())
			}
			t.Logf("the windows held at most %d of the budget", peak.Load())
			if peak.Load() > 0 {
				grew++
			}
		})
	}
	// Loopback rounds are short, and most runs grow a window past
	// StartWindow before their 1-2 MiB are through; one must.
	if grew == 0 {
		t.Fatal("no run grew a window")
	}
}

// streamDropRun is the property: whatever the drop points, and with
// duplicated frames, each far end reads exactly what the other wrote.
func streamDropRun(t *testing.T, seed uint64, dup bool, budget *Budget) {
	rng := rand.New(rand.NewPCG(seed, 99))
	clientSide, aLocal := testsvc.TCPPair(t)
	bLocal, serverSide := testsvc.TCPPair(t)
	// a plays the daemon, b the agent.
	opts := StreamOptions{Buffer: 64 << 10, ResumeWindow: time.Minute}
	if budget != nil {
		opts.Buffer, opts.Budget = 4<<20, budget
	}
	b := NewStream(7, bLocal, opts)
	opts.LingerForPeer = true
	a := NewStream(7, aLocal, opts)
	var mu sync.Mutex
	// Each carrier is a net.Pipe: synchronous, so any wait of one side on
	// the other deadlocks here rather than hiding in a buffer. a's end can
	// be killed alone (a deadline, not a close), so b can go on believing in
	// a carrier that a has given up on.
	type carrier struct {
		a, b net.Conn
		ca   Carrier
		cb   Carrier
	}
	newCarrier := func() carrier {
		x, y := net.Pipe()
		c := carrier{a: x, b: y, ca: x, cb: y}
		if dup {
			c.ca = dupConn{x, rand.New(rand.NewPCG(seed, rng.Uint64())), &mu}
			c.cb = dupConn{y, rand.New(rand.NewPCG(seed, rng.Uint64())), &mu}
		}
		return c
	}
	var carriers []carrier
	defer func() {
		for _, c := range carriers {
			c.a.Close()
			c.b.Close()
		}
	}()
	cur := newCarrier()
	carriers = append(carriers, cur)
	if err := a.Attach(cur.ca, nil, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Attach(cur.cb, nil, 0, false); err != nil {
		t.Fatal(err)
	}

	up := make([]byte, 1<<20+rng.IntN(1<<20))
	down := make([]byte, 1<<20+rng.IntN(1<<20))
	for i := range up {
		up[i] = byte(rng.Uint32())
	}
	for i := range down {
		down[i] = byte(rng.Uint32())
	}
	var wg sync.WaitGroup
	var gotUp, gotDown []byte
	var errUp, errDown error
	send := func(c *net.TCPConn, p []byte) {
		defer wg.Done()
		for len(p) > 0 {
			n := min(len(p), 1+rand.IntN(8<<10))
			if _, err := c.Write(p[:n]); err != nil {
				return
			}
			p = p[n:]
		}
		c.CloseWrite()
	}
	wg.Add(4)
	go send(clientSide, up)
	go send(serverSide, down)
	go func() { defer wg.Done(); gotUp, errUp = io.ReadAll(serverSide) }()
	go func() { defer wg.Done(); gotDown, errDown = io.ReadAll(clientSide) }()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// reconnect moves both streams to a new carrier. With early, only a's
	// end of the old one dies first, as when the agent has not yet noticed
	// the drop; b learns of it when it resumes.
	reconnect := func(early bool) {
		next := newCarrier()
		carriers = append(carriers, next)
		if early {
			cur.a.SetDeadline(time.Unix(1, 0))
			testsvc.Eventually(t, "a detached", func() bool { return a.Detached() || isDone(a) })
		} else {
			cur.a.Close()
			testsvc.Eventually(t, "both detached", func() bool {
				return (a.Detached() || isDone(a)) && (b.Detached() || isDone(b))
			})
		}
		if isDone(a) {
			return
		}
		if isDone(b) {
			// b finished and closed, but its last ack died with the carrier.
			// The agent's record of finished streams answers for it.
			go func() {
				writeFrame(next.cb, frame{typ: frameResumed, b: b.Received()}, nil)
				next.cb.Close()
			}()
		} else {
			go b.Attach(next.cb, nil, a.Received(), true)
		}
		var hdr [headerLen]byte
		f, err := readFrame(next.ca, hdr[:])
		if err != nil || f.typ != frameResumed {
			t.Errorf("resume answer: %v %v", f.typ, err)
			return
		}
		if err := a.Attach(next.ca, nil, f.b, false); err != nil {
			t.Error(err)
		}
		cur = next
	}
	drops := 0
loop:
	for {
		select {
		case <-done:
			break loop
		case <-time.After(time.Duration(rng.IntN(4000)) * time.Microsecond):
		}
		if isDone(a) || isDone(b) {
			continue
		}
		drops++
		reconnect(rng.IntN(3) == 0)
	}
	// The last cut may have come after the data but before the final acks:
	// the streams finish once they have a carrier again.
	for !isDone(a) || !isDone(b) {
		if a.Detached() || b.Detached() {
			reconnect(false)
		}
		time.Sleep(time.Millisecond)
	}
	if a.Err() != nil || b.Err() != nil {
		t.Fatalf("seed %d: streams ended with a: %v, b: %v; want clean ends", seed, a.Err(), b.Err())
	}
	if errUp != nil || errDown != nil {
		t.Fatalf("seed %d after %d drops: read errors up=%v down=%v; a: %v; b: %v", seed, drops, errUp, errDown, a.Err(), b.Err())
	}
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatalf("seed %d after %d drops: up %d/%d bytes (sha %x vs %x), down %d/%d", seed, drops,
			len(gotUp), len(up), sha256.Sum256(gotUp), sha256.Sum256(up), len(gotDown), len(down))
	}
	t.Logf("seed %d: %d drops, up %d down %d bytes intact (dup=%v)", seed, drops, len(up), len(down), dup)
}

func isDone(s *Stream) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

func TestStreamResetReachesBothClients(t *testing.T) {
	clientSide, aLocal := testsvc.TCPPair(t)
	bLocal, serverSide := testsvc.TCPPair(t)
	a := NewStream(1, aLocal, StreamOptions{ResumeWindow: time.Minute})
	b := NewStream(1, bLocal, StreamOptions{ResumeWindow: time.Minute})
	ca, cb := net.Pipe()
	defer ca.Close()
	_ = a.Attach(ca, nil, 0, false)
	_ = b.Attach(cb, nil, 0, false)
	if _, err := serverSide.Write([]byte("partial reply")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 13)
	if _, err := io.ReadFull(clientSide, buf); err != nil {
		t.Fatal(err)
	}
	serverSide.SetLinger(0)
	serverSide.Close() // the server inside the sprite resets
	_, err := clientSide.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after the server's reset: %v, want ECONNRESET", err)
	}
	<-a.Done()
	if !errors.Is(a.Err(), ErrPeerReset) {
		t.Fatalf("daemon side ended with %v, want ErrPeerReset", a.Err())
	}
}

func TestStreamWindowExpiryResets(t *testing.T) {
	clientSide, aLocal := testsvc.TCPPair(t)
	a := NewStream(1, aLocal, StreamOptions{ResumeWindow: 50 * time.Millisecond})
	ca, cb := net.Pipe()
	_ = a.Attach(ca, nil, 0, false)
	cb.Close()
	buf := make([]byte, 1)
	_, err := clientSide.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after the window: %v, want ECONNRESET", err)
	}
	<-a.Done()
	if !errors.Is(a.Err(), ErrResumeExpired) {
		t.Fatalf("ended with %v, want ErrResumeExpired", a.Err())
	}
}

// A client that keeps writing while the link is down fills the replay
// buffer, then waits in its own socket: the stream holds no more than its
// buffer, and the window's expiry resets the client.
func TestStreamDetachedWriterIsHeldThenReset(t *testing.T) {
	clientSide, aLocal := testsvc.TCPPair(t)
	a := NewStream(1, aLocal, StreamOptions{Buffer: 64 << 10, ResumeWindow: 2 * time.Second})
	ca, cb := net.Pipe()
	_ = a.Attach(ca, nil, 0, false)
	cb.Close()
	testsvc.Eventually(t, "detached", a.Detached)
	var werr error
	written := 0
	chunk := make([]byte, 16<<10)
	_ = clientSide.SetWriteDeadline(time.Now().Add(time.Second))
	for i := 0; i < 4096 && werr == nil; i++ { // up to 64 MiB: far past the buffer
		var n int
		n, werr = clientSide.Write(chunk)
		written += n
	}
	if werr == nil {
		t.Fatal("the client wrote 64 MiB into a detached stream with a 64 KiB buffer")
	}
	a.mu.Lock()
	held := a.buf.len()
	a.mu.Unlock()
	if held > 64<<10 {
		t.Fatalf("the stream holds %d bytes, more than its 64 KiB buffer", held)
	}
	t.Logf("client wrote %d bytes before blocking; the stream holds %d", written, held)
	_ = clientSide.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := clientSide.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after the window: %v, want ECONNRESET", err)
	}
	<-a.Done()
	if !errors.Is(a.Err(), ErrResumeExpired) {
		t.Fatalf("ended with %v, want ErrResumeExpired", a.Err())
	}
}

// A stream registered but not yet attached is not waiting for a resume: a
// repair pass that ran between the two would otherwise resume a stream
// whose open the agent has not seen yet (found by the outage e2e test).
func TestStreamNotDetachedBeforeFirstAttach(t *testing.T) {
	_, local := testsvc.TCPPair(t)
	st := NewStream(1, local, StreamOptions{ResumeWindow: time.Minute})
	if st.Detached() {
		t.Fatal("a new stream reports itself detached")
	}
	ca, cb := net.Pipe()
	defer ca.Close()
	_ = st.Attach(ca, nil, 0, false)
	cb.Close()
	testsvc.Eventually(t, "detached after its carrier died", st.Detached)
	st.Reset(errors.New("done"))
}

// The transition table is the lifecycle's rules: the two ends are final,
// every live state can fail, a clean end comes only after both FINs, and
// no state moves to itself. to enforces the table, and checks its lock.
func TestStreamTransitions(t *testing.T) {
	legal := func(from, next streamState) (ok bool) {
		s := NewStream(1, nil, StreamOptions{})
		s.mu.Lock()
		defer s.mu.Unlock()
		s.state = from
		defer func() { ok = recover() == nil && s.state == next }()
		s.to(next)
		return
	}
	for from := stateNew; from <= stateReset; from++ {
		for next := stateNew; next <= stateReset; next++ {
			ok := legal(from, next)
			switch {
			case from.ended() && ok:
				t.Errorf("%s → %s: an ended stream came back", from, next)
			case !from.ended() && next == stateReset && !ok:
				t.Errorf("%s → reset refused: a live stream must be able to fail", from)
			case next == stateClosed && ok && from != stateBothFin && from != stateLinger:
				t.Errorf("%s → closed: a clean end before both FINs", from)
			case from == next && ok:
				t.Errorf("%s → %s allowed", from, next)
			}
		}
	}
	s := NewStream(1, nil, StreamOptions{})
	defer func() {
		if recover() == nil {
			t.Error("to without mu did not panic")
		}
	}()
	s.to(stateOpen)
}
