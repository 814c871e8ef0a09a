package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"
)

// fakeLink is a directLink that connects when told to.
type fakeLink struct {
	name      string
	connected chan error // receives the outcome of "connected"
	once      sync.Once
	result    error
	gotResult chan struct{}

	mu     sync.Mutex
	wrote  bytes.Buffer
	closed bool
	down   chan []byte // what the sprite sends
}

func newFakeLink(name string) *fakeLink {
	return &fakeLink{name: name, connected: make(chan error, 1), gotResult: make(chan struct{}), down: make(chan []byte, 16)}
}

func (f *fakeLink) Connected(ctx context.Context) error {
	select {
	case err := <-f.connected:
		f.once.Do(func() { f.result = err; close(f.gotResult) })
	case <-f.gotResult:
	case <-ctx.Done():
		return ctx.Err()
	}
	return f.result
}

func (f *fakeLink) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	f.wrote.Write(p)
	return len(p), nil
}

func (f *fakeLink) Read(p []byte) (int, error) {
	b, ok := <-f.down
	if !ok {
		return 0, io.EOF
	}
	return copy(p, b), nil
}

func (f *fakeLink) written() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wrote.String()
}

func (f *fakeLink) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

func (f *fakeLink) CloseNow() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		// A closed link's pending "connected" fails, as a closed WebSocket's read does.
		select {
		case f.connected <- net.ErrClosed:
		default:
		}
	}
	return nil
}
func (f *fakeLink) Close() error               { return f.CloseNow() }
func (f *fakeLink) Ping(context.Context) error { return nil }
func (f *fakeLink) LastSeen() time.Time        { return time.Now() }
func (f *fakeLink) Target() string             { return f.name }
func (f *fakeLink) Connect(err error)          { f.connected <- err }
func (f *fakeLink) Send(s string)              { f.down <- []byte(s) }

func readN(r io.Reader, n int) string {
	b := make([]byte, n)
	k, _ := r.Read(b)
	return string(b[:k])
}

type outcome struct {
	how warmOutcome
	err error
}

func startFake(first *fakeLink, after time.Duration, redial func(context.Context) (directLink, error)) (*warmConn, chan outcome) {
	out := make(chan outcome, 1)
	w := startWarm(context.Background(), first, after, redial, func(h warmOutcome, _ directLink, err error) { out <- outcome{h, err} })
	return w, out
}

func TestWarmConnHit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := newFakeLink("spare")
		redials := 0
		w, out := startFake(first, time.Second, func(context.Context) (directLink, error) {
			redials++
			return nil, errors.New("not wanted")
		})
		defer w.CloseNow()
		w.Write([]byte("GET / HTTP/1.1\r\n")) // before "connected": pipelined
		time.Sleep(100 * time.Millisecond)
		first.Connect(nil)
		first.Send("HTTP/1.1 200 OK")
		if got := readN(w, 64); got != "HTTP/1.1 200 OK" {
			t.Fatalf("read %q", got)
		}
		w.Write([]byte("more"))
		if o := <-out; o.how != warmHit || o.err != nil {
			t.Fatalf("outcome %+v, want a hit", o)
		}
		if got := first.written(); got != "GET / HTTP/1.1\r\nmore" {
			t.Errorf("the spare got %q", got)
		}
		if redials != 0 {
			t.Errorf("%d redials on a hit", redials)
		}
	})
}

// A spare that never answers costs the client the fallback delay, then the
// fresh link carries the connection with the first bytes exactly once.
func TestWarmConnFallbackReplaysOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := newFakeLink("dead spare")
		fresh := newFakeLink("fresh")
		start := time.Now()
		var dialedAt time.Time
		w, out := startFake(first, 300*time.Millisecond, func(context.Context) (directLink, error) {
			dialedAt = time.Now()
			time.Sleep(50 * time.Millisecond) // the dial's own round trips
			return fresh, nil
		})
		defer w.CloseNow()
		w.Write([]byte("hello "))
		w.Write([]byte("world"))
		fresh.Send("reply")
		if got := readN(w, 64); got != "reply" {
			t.Fatalf("read %q", got)
		}
		if o := <-out; o.how != warmFallback || o.err != nil {
			t.Fatalf("outcome %+v, want a fallback", o)
		}
		if d := dialedAt.Sub(start); d != 300*time.Millisecond {
			t.Errorf("fresh dial after %v, want the fallback delay of 300ms", d)
		}
		w.Write([]byte("!"))
		if got := fresh.written(); got != "hello world!" {
			t.Errorf("the fresh link got %q, want each byte once and in order", got)
		}
		if !first.isClosed() {
			t.Error("the dead spare was left open")
		}
	})
}

// A spare whose target refused needs no wait: the fresh dial starts at once.
func TestWarmConnRefusedSpareRedialsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := newFakeLink("spare")
		fresh := newFakeLink("fresh")
		start := time.Now()
		w, out := startFake(first, time.Hour, func(context.Context) (directLink, error) {
			if time.Since(start) != 0 {
				t.Errorf("redial after %v", time.Since(start))
			}
			return fresh, nil
		})
		defer w.CloseNow()
		w.Write([]byte("x"))
		first.Connect(errors.New("1011: Failed to connect to target"))
		if o := <-out; o.how != warmFallback {
			t.Fatalf("outcome %+v", o)
		}
		if got := fresh.written(); got != "x" {
			t.Errorf("fresh got %q", got)
		}
	})
}

// When the fresh dial fails too, reads and writes fail with a SetupError
// that wraps the dial's error, so the forward reports it as a failed
// connect, with its advice.
func TestWarmConnBothFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := newFakeLink("spare")
		dialErr := errors.New("401 unauthorized")
		w, out := startFake(first, 100*time.Millisecond, func(context.Context) (directLink, error) { return nil, dialErr })
		defer w.CloseNow()
		w.Write([]byte("x"))
		_, err := w.Read(make([]byte, 8))
		var se *SetupError
		if !errors.As(err, &se) || !errors.Is(err, dialErr) {
			t.Fatalf("read: %v, want a SetupError wrapping the dial's", err)
		}
		if _, err := w.Write([]byte("y")); !errors.Is(err, dialErr) {
			t.Errorf("write after: %v", err)
		}
		if o := <-out; o.how != warmFailed || !errors.Is(o.err, dialErr) {
			t.Errorf("outcome %+v", o)
		}
	})
}

// A spare that answers late, while the fresh dial is still on its way,
// wins; the fresh link is closed when it comes.
func TestWarmConnLateSpareWinsTheRace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := newFakeLink("slow spare")
		fresh := newFakeLink("fresh")
		w, out := startFake(first, 100*time.Millisecond, func(ctx context.Context) (directLink, error) {
			time.Sleep(time.Second)
			return fresh, nil
		})
		defer w.CloseNow()
		w.Write([]byte("abc"))
		time.Sleep(200 * time.Millisecond)
		first.Connect(nil)
		if o := <-out; o.how != warmHit {
			t.Fatalf("outcome %+v, want the spare", o)
		}
		w.Write([]byte("d"))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if first.written() != "abcd" || fresh.written() != "" || !fresh.isClosed() {
			t.Errorf("spare got %q, fresh got %q (closed %v)", first.written(), fresh.written(), fresh.isClosed())
		}
	})
}

// Past maxReplay, writes wait for the race to end, so memory stays bounded.
func TestWarmConnBoundsTheReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := newFakeLink("spare")
		w, _ := startFake(first, time.Hour, nil)
		defer w.CloseNow()
		w.Write(make([]byte, maxReplay))
		wrote := make(chan struct{})
		go func() {
			w.Write([]byte("over"))
			close(wrote)
		}()
		synctest.Wait()
		select {
		case <-wrote:
			t.Fatal("a write past maxReplay did not wait for connected")
		default:
		}
		first.Connect(nil)
		<-wrote
		if n := len(first.written()); n != maxReplay+4 {
			t.Errorf("spare got %d bytes", n)
		}
	})
}

// fakeSpare is a spareLink whose pings answer while it lives.
type fakeSpare struct {
	mu     sync.Mutex
	seen   time.Time
	dead   bool
	closed bool
	mute   bool // pings hang
}

func (s *fakeSpare) Ping(ctx context.Context) error {
	s.mu.Lock()
	mute, dead := s.mute, s.dead
	s.mu.Unlock()
	if dead {
		return net.ErrClosed
	}
	if mute {
		<-ctx.Done()
		return ctx.Err()
	}
	time.Sleep(20 * time.Millisecond)
	s.mu.Lock()
	s.seen = time.Now()
	s.mu.Unlock()
	return nil
}
func (s *fakeSpare) RTT() time.Duration   { return 20 * time.Millisecond }
func (s *fakeSpare) Setup() time.Duration { return 45 * time.Millisecond }
func (s *fakeSpare) LastSeen() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}
func (s *fakeSpare) Dead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}
func (s *fakeSpare) Start(string, int) (directLink, error) { return newFakeLink("spare"), nil }
func (s *fakeSpare) CloseNow() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

type spareDialer struct {
	mu     sync.Mutex
	dialed []*fakeSpare
	fail   bool
}

func (d *spareDialer) dial(ctx context.Context) (spareLink, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail {
		return nil, errors.New("503")
	}
	s := &fakeSpare{seen: time.Now()}
	d.dialed = append(d.dialed, s)
	return s, nil
}

func (d *spareDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.dialed)
}

func (d *spareDialer) open() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, s := range d.dialed {
		s.mu.Lock()
		if !s.closed {
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// settle lets the pool's dials and first pings (20 ms each) finish.
func settle() {
	time.Sleep(100 * time.Millisecond)
	synctest.Wait()
}

// inUsePool returns a pool whose sprite is in use and known to run, once
// its spares are dialled; it is released and closed at cleanup.
func inUsePool(t *testing.T) (*warmPool, *spareDialer) {
	d := &spareDialer{}
	p := newTestPool(d)
	t.Cleanup(p.close)
	p.acquire()
	t.Cleanup(p.release)
	p.connected()
	settle()
	return p, d
}

func newTestPool(d *spareDialer) *warmPool {
	return newWarmPool("box", warmSettings{size: 2, linger: 10 * time.Second, ping: 5 * time.Second}, d.dial, zerolog.Nop())
}

// Spares are dialled only while the sprite is in use and known to run, and
// closed once the linger after its last connection ends.
func TestWarmPoolHoldsSparesOnlyWhileInUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &spareDialer{}
		p := newTestPool(d)
		defer p.close()

		p.acquire()
		if p.take() != nil {
			t.Fatal("a spare handed out before one was dialled")
		}
		synctest.Wait()
		if d.count() != 0 {
			t.Fatalf("%d spares dialled before any link reached the sprite", d.count())
		}
		p.connected()
		settle()
		if p.count() != 2 || d.count() != 2 {
			t.Fatalf("pool holds %d of %d dialled, want 2", p.count(), d.count())
		}
		if p.take() == nil {
			t.Fatal("no spare handed out")
		}
		settle()
		if p.count() != 2 || d.count() != 3 {
			t.Fatalf("after a take: %d held, %d dialled; want the taken one replaced", p.count(), d.count())
		}
		p.release()
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if p.count() != 2 {
			t.Fatalf("spares closed %d s into a 10 s linger", 9)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if p.count() != 0 || d.open() != 1 { // the taken one belongs to its connection
			t.Fatalf("after the linger: %d held, %d open", p.count(), d.open())
		}
		// An hour idle: nothing is dialled, pinged or kept.
		time.Sleep(time.Hour)
		synctest.Wait()
		if d.count() != 3 {
			t.Fatalf("%d dials while idle", d.count()-3)
		}
		// What was known of the sprite is stale after an idle spell: the
		// next connection must get through before spares are dialled.
		p.acquire()
		defer p.release()
		p.take()
		settle()
		if d.count() != 3 {
			t.Fatalf("%d spares dialled for a sprite that may have slept", d.count()-3)
		}
	})
}

// A connection during the linger keeps the spares.
func TestWarmPoolReuseWithinLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &spareDialer{}
		p := newTestPool(d)
		defer p.close()
		p.acquire()
		p.connected()
		settle()
		p.release()
		time.Sleep(5 * time.Second)
		p.acquire()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if p.count() != 2 {
			t.Fatalf("%d spares held while in use", p.count())
		}
		if p.take() == nil {
			t.Fatal("no spare after 30 s of pings")
		}
		p.release()
	})
}

// A spare that stops answering pings is dropped, and then none is dialled
// until a real link reaches the sprite again: it may be asleep.
func TestWarmPoolDropsMuteSpares(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, d := inUsePool(t)
		d.mu.Lock()
		for _, s := range d.dialed {
			s.mu.Lock()
			s.mute = true
			s.mu.Unlock()
		}
		d.mu.Unlock()
		time.Sleep(12 * time.Second) // past a ping and its timeout
		synctest.Wait()
		if p.count() != 0 {
			t.Fatalf("%d mute spares kept", p.count())
		}
		if p.take() != nil {
			t.Fatal("a mute spare handed out")
		}
		synctest.Wait()
		if d.count() != 2 {
			t.Fatalf("%d dials after the spares went mute, want none until a link gets through", d.count()-2)
		}
		p.connected()
		settle()
		if p.count() != 2 {
			t.Fatalf("%d spares after a link got through", p.count())
		}
	})
}

// A spare that has not answered lately is not handed out, and a dead one
// is dropped.
func TestWarmPoolTakesOnlyFreshSpares(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &spareDialer{}
		p := newWarmPool("box", warmSettings{size: 2, linger: time.Minute, ping: 0}, d.dial, zerolog.Nop())
		defer p.close()
		p.acquire()
		defer p.release()
		p.connected()
		settle()
		time.Sleep(time.Minute) // no pings (ping: 0): both go stale
		if p.take() != nil {
			t.Fatal("a stale spare handed out")
		}
		d.dialed[0].mu.Lock()
		d.dialed[0].dead = true
		d.dialed[0].mu.Unlock()
		if p.take() != nil {
			t.Fatal("a dead or stale spare handed out")
		}
		if p.count() != 1 {
			t.Fatalf("%d held, want the dead one dropped and the stale one kept", p.count())
		}
	})
}

func TestWarmPoolFallbackAfterFollowsRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &spareDialer{}
		p := newTestPool(d)
		defer p.close()
		if got := p.fallbackAfter(); got != fallbackUnknown {
			t.Errorf("before any ping: %v", got)
		}
		p.acquire()
		defer p.release()
		p.connected()
		settle()
		if got, want := p.fallbackAfter(), fallbackRTTs*20*time.Millisecond+fallbackSlack; got != want {
			t.Errorf("with a 20ms round trip: %v, want %v", got, want)
		}
	})
}

// A failed dial stops filling until a link gets through again.
func TestWarmPoolFailedDialStopsFilling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &spareDialer{fail: true}
		p := newTestPool(d)
		defer p.close()
		p.acquire()
		defer p.release()
		p.connected()
		settle()
		d.mu.Lock()
		d.fail = false
		d.mu.Unlock()
		p.take()
		time.Sleep(time.Minute)
		synctest.Wait()
		if d.count() != 0 {
			t.Fatalf("%d spares dialled after a failure, before any link got through", d.count())
		}
	})
}

// blockingLink is a fakeLink whose writes block until it is closed, as a
// WebSocket write does on a connection whose peer stopped reading (a
// network that died under a replay).
type blockingLink struct {
	*fakeLink
	writing chan struct{}
	release chan struct{}
}

func (b *blockingLink) Write(p []byte) (int, error) {
	select {
	case b.writing <- struct{}{}:
	default:
	}
	<-b.release
	return 0, errors.New("closed under the write")
}

func (b *blockingLink) CloseNow() error {
	b.fakeLink.CloseNow()
	select {
	case <-b.release:
	default:
		close(b.release)
	}
	return nil
}

// A replay that the network holds up (a fresh link whose peer stopped
// reading) must not hold up CloseNow, which is how a stopping forward or a
// reset client ends the connection.
func TestWarmConnCloseNowInterruptsAReplay(t *testing.T) {
	// Not in a synctest bubble: a goroutine blocked on a sync.Mutex is not
	// durably blocked, so a regression would hang the bubble's clock.
	first := newFakeLink("dead spare")
	fresh := &blockingLink{fakeLink: newFakeLink("fresh"), writing: make(chan struct{}, 1), release: make(chan struct{})}
	w, out := startFake(first, time.Millisecond, func(context.Context) (directLink, error) { return fresh, nil })
	w.Write([]byte("kept for the replay"))
	<-fresh.writing // settle is inside the replay write
	closed := make(chan struct{})
	go func() {
		w.CloseNow() // what the relay's abort does
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Error("CloseNow still blocked 2 s later, behind the replay that only it could end")
		fresh.CloseNow() // let the test end
		<-closed
	}
	<-out
}

// A client that goes away while the spare's race runs is neither a
// fallback nor a reason to dial.
func TestWarmConnClientGoneDuringRaceIsNotAFallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, _ := inUsePool(t)
		var hits, misses, fallbacks atomic.Int64
		redials := 0
		tr := &directTransport{}
		h := Hooks{WarmHits: &hits, WarmMisses: &misses, WarmFallbacks: &fallbacks}
		link := tr.startOnSpare(context.Background(), p, Target{Sprite: "box", Port: 1}, func(ctx context.Context) (directLink, error) {
			redials++
			return nil, ctx.Err()
		}, h, func(warmOutcome, directLink) {})
		if link == nil {
			t.Fatal("no spare taken")
		}
		link.Write([]byte("GET / HTTP/1.1\r\n"))
		time.Sleep(10 * time.Millisecond) // well inside fallbackAfter
		link.CloseNow()                   // the client reset; the relay aborts
		time.Sleep(time.Minute)
		synctest.Wait()
		if fallbacks.Load() != 0 || redials != 0 {
			t.Errorf("client gone during the race: %d fallbacks, %d redials; want 0 and 0", fallbacks.Load(), redials)
		}
	})
}

// A client that sends its request and half-closes (nc -N) while the race
// runs is not reset as "sprite silent" when the fallback and the fresh
// dial take longer than half_close_timeout: as on the normal path, the
// sprite's silence counts from when its link is up.
func TestWarmConnHalfCloseCountsFromTheLink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const halfClose = 5 * time.Second // the default
		first := newFakeLink("silent spare")
		fresh := newFakeLink("fresh")
		w, _ := startFake(first, time.Second, func(context.Context) (directLink, error) {
			time.Sleep(6 * time.Second) // a fresh dial that retries a 503 once
			return fresh, nil
		})
		client, local := memPair()
		done := make(chan RelayResult, 1)
		go func() {
			done <- Relay(local, w, RelayOptions{HalfCloseTimeout: halfClose, DrainTimeout: time.Second, Ready: w.Ready()})
		}()
		got := make(chan string, 1)
		go func() { b, _ := io.ReadAll(client); got <- string(b) }()
		client.Write([]byte("query"))
		client.CloseWrite()
		go func() {
			if _, err := w.wait(); err == nil {
				fresh.Send("answer")
				close(fresh.down)
			}
		}()
		res := <-done
		client.Close()
		w.CloseNow()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if res.End != EndClean || <-got != "answer" {
			t.Errorf("relay ended %v (%v); want the fresh link's answer and a clean end", res.End, res.Err)
		}
	})
}
