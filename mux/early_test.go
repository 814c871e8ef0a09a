package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

// rwc is a pipe's two halves as one link.
type rwc struct {
	io.Reader
	io.Writer
}

func (rwc) Close() error { return nil }

func testSealKey(t testing.TB) (secret string, d, a, body []byte) {
	return "s3cret", bytes.Repeat([]byte{1}, nonceLen), bytes.Repeat([]byte{2}, nonceLen), make([]byte, bodyLen)
}

func TestSealRoundTrip(t *testing.T) {
	secret, d, a, body := testSealKey(t)
	tests := []struct {
		name   string
		writes []int
	}{
		{"none", nil},
		{"one byte", []int{1}},
		{"a record's most", []int{maxSealed}},
		{"one over", []int{maxSealed + 1}},
		{"many of each", []int{7, maxSealed * 3, 1, 0, 12, maxSealed - 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var link bytes.Buffer
			s := newSealer(rwc{Writer: &link}, sealKey(secret, d, a, body))
			var want []byte
			for i, n := range tt.writes {
				p := bytes.Repeat([]byte{byte(i + 1)}, n)
				if k, err := s.Write(p); err != nil || k != n {
					t.Fatalf("write %d: %d, %v", n, k, err)
				}
				want = append(want, p...)
			}
			if err := s.finish(); err != nil {
				t.Fatal(err)
			}
			clear := []byte("in the clear after the last record")
			s.Write(clear)
			if bytes.Contains(link.Bytes()[:link.Len()-len(clear)], bytes.Repeat([]byte{1}, 7)) {
				t.Fatal("a sealed write crossed the link in the clear")
			}
			want = append(want, clear...)
			got, err := io.ReadAll(newUnsealer(rwc{Reader: &link}, sealKey(secret, d, a, body)))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("unsealed %d bytes (%v), want %d", len(got), err, len(want))
			}
		})
	}
}

func TestUnsealRefuses(t *testing.T) {
	secret, d, a, body := testSealKey(t)
	sealed := func() []byte {
		var link bytes.Buffer
		s := newSealer(rwc{Writer: &link}, sealKey(secret, d, a, body))
		s.Write([]byte("the client's first bytes"))
		s.finish()
		return link.Bytes()
	}
	tests := []struct {
		name   string
		link   func() []byte
		secret string
		nonce  byte
	}{
		{"a flipped bit", func() []byte { b := sealed(); b[5] ^= 1; return b }, secret, 2},
		{"another secret", sealed, "other", 2},
		{"another link's nonce", sealed, secret, 3},
		{"records swapped", func() []byte {
			b := sealed()
			first := 2 + len("the client's first bytes") + sealTag
			return append(append([]byte{}, b[first:]...), b[:first]...)
		}, secret, 2},
		{"too long a record", func() []byte { return []byte{0xff, 0xff} }, secret, 2},
		{"shorter than its tag", func() []byte { return []byte{0, sealTag - 1} }, secret, 2},
		{"cut short", func() []byte { return sealed()[:10] }, secret, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUnsealer(rwc{Reader: bytes.NewReader(tt.link())}, sealKey(tt.secret, d, bytes.Repeat([]byte{tt.nonce}, nonceLen), body))
			got, err := io.ReadAll(u)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("read %q, %v; want ErrProtocol", got, err)
			}
			if len(got) > 0 {
				t.Fatalf("handed on %q from a link that does not open", got)
			}
		})
	}
}

// FuzzUnseal: whatever is done to a sealed link, the agent reads the
// daemon's bytes or a prefix of them, then an error; never other bytes.
func FuzzUnseal(f *testing.F) {
	f.Add([]byte("hello"), uint16(0), byte(0), uint16(3))
	f.Add(bytes.Repeat([]byte("x"), 3000), uint16(40), byte(0x80), uint16(1000))
	f.Add([]byte{}, uint16(1), byte(1), uint16(0))
	f.Fuzz(func(t *testing.T, plain []byte, at uint16, xor byte, chunk uint16) {
		secret, d, a, body := testSealKey(t)
		var link bytes.Buffer
		s := newSealer(rwc{Writer: &link}, sealKey(secret, d, a, body))
		step := max(int(chunk)%(len(plain)+1), 1)
		for p := plain; len(p) > 0; p = p[min(step, len(p)):] {
			s.Write(p[:min(step, len(p))])
		}
		s.finish()
		b := link.Bytes()
		if len(b) > 0 {
			b[int(at)%len(b)] ^= xor
		}
		got, err := io.ReadAll(newUnsealer(rwc{Reader: bytes.NewReader(b)}, sealKey(secret, d, a, body)))
		if !bytes.HasPrefix(plain, got) {
			t.Fatalf("unsealed %q, not a prefix of %q", got, plain)
		}
		if xor == 0 && (err != nil || len(got) != len(plain)) {
			t.Fatalf("an untouched link: %d of %d bytes, %v", len(got), len(plain), err)
		}
	})
}

// heldPath is a path from the daemon to the agent that lets the agent's
// greeting through at once and holds the rest of what the agent sends
// until released, and records what the daemon sends.
type heldPath struct {
	release chan struct{}
	mu      sync.Mutex
	sent    []byte
}

func (hp *heldPath) dial(t *testing.T, ctx context.Context, addr string) (net.Conn, error) {
	daemon, near := testsvc.TCPPair(t)
	var d net.Dialer
	agent, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := near.Read(buf)
			hp.mu.Lock()
			hp.sent = append(hp.sent, buf[:n]...)
			hp.mu.Unlock()
			agent.Write(buf[:n])
			if err != nil {
				agent.Close()
				return
			}
		}
	}()
	go func() {
		g := make([]byte, greetingLen)
		if _, err := io.ReadFull(agent, g); err == nil {
			near.Write(g)
			select {
			case <-hp.release:
				io.Copy(near, agent)
			case <-ctx.Done():
			}
		}
		near.Close()
	}()
	return daemon, nil
}

func (hp *heldPath) daemonSent() []byte {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	return append([]byte(nil), hp.sent...)
}

// TestFirstStreamGoesBeforeAgentProof: a new session's first stream costs
// no round trip of the handshake's. Its open and first bytes reach the
// target while the agent's proof is still on its way to the daemon, and
// they never cross the link in the clear.
func TestFirstStreamGoesBeforeAgentProof(t *testing.T) {
	marker := bytes.Repeat([]byte("first bytes of the client, "), 100)
	arrived := make(chan []byte, 1)
	target := testsvc.Serve(t, func(c net.Conn) {
		got := make([]byte, len(marker))
		if _, err := io.ReadFull(c, got); err != nil {
			return
		}
		arrived <- got
		c.Write([]byte("answer"))
		io.Copy(io.Discard, c)
	})
	rig := newAgentRig(t)
	hp := &heldPath{release: make(chan struct{})}
	c := dialingClient(t, rig.secret, func(ctx context.Context) (net.Conn, error) { return hp.dial(t, ctx, rig.addr) })
	client, local := testsvc.TCPPair(t)
	client.Write(marker)
	host, port := splitHostPort(t, target)
	opened := make(chan error, 1)
	go func() {
		_, err := c.Open(context.Background(), local, host, port, true, StreamOptions{})
		opened <- err
	}()
	select {
	case got := <-arrived:
		if !bytes.Equal(got, marker) {
			t.Fatalf("the target got %q", got)
		}
	case err := <-opened:
		t.Fatalf("Open returned (%v) while the agent's proof was held", err)
	case <-time.After(30 * time.Second): // a failure detector
		t.Fatal("the first bytes waited for the agent's proof")
	}
	if bytes.Contains(hp.daemonSent(), marker[:64]) {
		t.Fatal("the client's bytes crossed the link in the clear before the agent's proof")
	}
	close(hp.release)
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	echoOnceRead(t, client, []byte("answer"))
	if s := c.Stats(); s.Sessions != 1 || s.Resumptions != 0 {
		t.Errorf("%d sessions, %d resumptions; want 1 and 0", s.Sessions, s.Resumptions)
	}
}

// recordingTarget is a server that keeps every byte it is sent, over all
// its connections, and answers "done" once it has want of them.
func recordingTarget(t *testing.T, want int) (addr string, got func() []byte) {
	var mu sync.Mutex
	var all []byte
	addr = testsvc.Serve(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			mu.Lock()
			all = append(all, buf[:n]...)
			full := n > 0 && len(all) == want
			mu.Unlock()
			if full {
				c.Write([]byte("done"))
			}
			if err != nil {
				return
			}
		}
	})
	return addr, func() []byte {
		mu.Lock()
		defer mu.Unlock()
		return append([]byte(nil), all...)
	}
}

// firstProven is a Connect that dials addrs in turn and keeps the first
// session whose agent proves secret; errs collects the handshakes that
// failed on the way.
func firstProven(secret string, addrs ...string) (connect func(context.Context, Hello) (*Session, bool, error), errs *[]error) {
	errs = new([]error)
	connect = func(ctx context.Context, h Hello) (*Session, bool, error) {
		for _, addr := range addrs {
			link, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, false, err
			}
			s, resumed, err := Dial(ctx, link, secret, h, zerolog.Nop())
			if err == nil {
				return s, resumed, nil
			}
			*errs = append(*errs, err)
		}
		return nil, false, errors.Join(*errs...)
	}
	return connect, errs
}

// dialingClient is a client whose every session is dialled by dial and
// shaken hands with secret.
func dialingClient(t *testing.T, secret string, dial func(context.Context) (net.Conn, error)) *Client {
	connect := func(ctx context.Context, h Hello) (*Session, bool, error) {
		link, err := dial(ctx)
		if err != nil {
			return nil, false, err
		}
		return Dial(ctx, link, secret, h, zerolog.Nop())
	}
	c := NewClient(ClientOptions{Connect: connect, Buffer: 256 << 10, ResumeWindow: 10 * time.Second, IdleTimeout: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	return c
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := net.LookupPort("tcp", p)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

func echoOnceRead(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a failure detector
	defer c.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %q (%v), want %q", got, err, want)
	}
}

// impostor listens where the agent should, greets as one, and records what
// it is sent; it waits for at least wait bytes after the daemon's proof
// before answering with a proof it cannot make.
func impostor(t *testing.T, wait int) (addr string, seen func() []byte) {
	var mu sync.Mutex
	var got []byte
	addr = testsvc.Serve(t, func(c net.Conn) {
		c.Write(greeting(roleAgent))
		in := make([]byte, greetingLen+proofLen+wait)
		n, _ := io.ReadAtLeast(c, in, len(in))
		reply := append([]byte{statusOK, 0, 0, 0}, bytes.Repeat([]byte{7}, 32)...)
		c.Write(reply)
		rest, _ := io.ReadAll(c)
		mu.Lock()
		got = append(append(got, in[:n]...), rest...)
		mu.Unlock()
	})
	return addr, func() []byte {
		mu.Lock()
		defer mu.Unlock()
		return append([]byte(nil), got...)
	}
}

// TestEarlyStreamSurvivesImpostor: the first stream went behind our proof
// to something on the agent's port that then failed its own proof. It got
// only sealed bytes; the stream opens on the real agent's session, and the
// target sees the client's bytes once.
func TestEarlyStreamSurvivesImpostor(t *testing.T) {
	marker := bytes.Repeat([]byte("secret query; "), 300)
	target, delivered := recordingTarget(t, len(marker))
	fake, seen := impostor(t, len(marker))
	rig := newAgentRig(t)
	// As the daemon's agent pool does: what fails the proof is given up,
	// and the agent is found elsewhere.
	connect, errs := firstProven(rig.secret, fake, rig.addr)
	c := NewClient(ClientOptions{Connect: connect, Buffer: 256 << 10, ResumeWindow: 10 * time.Second, IdleTimeout: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	client, local := testsvc.TCPPair(t)
	client.Write(marker)
	host, port := splitHostPort(t, target)
	if _, err := c.Open(context.Background(), local, host, port, true, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	echoOnceRead(t, client, []byte("done"))
	if errs := *errs; len(errs) != 1 || !errors.Is(errs[0], ErrAgentProof) {
		t.Fatalf("handshake errors %v, want the impostor's failed proof", errs)
	}
	testsvc.Eventually(t, "the impostor's link closed", func() bool { return len(seen()) > 0 })
	if got := seen(); len(got) < len(marker) || bytes.Contains(got, marker[:64]) {
		t.Fatalf("the impostor got %d bytes, the client's in the clear: %v", len(got), bytes.Contains(got, marker[:64]))
	}
	if got := delivered(); !bytes.Equal(got, marker) {
		t.Fatalf("the target got %d bytes, want the client's %d once", len(got), len(marker))
	}
}

// TestEarlyStreamWithNoSession: when no session comes up, a stream that
// had read from its connection resets it; one that had not leaves it to
// the caller.
func TestEarlyStreamWithNoSession(t *testing.T) {
	t.Run("read from its connection", func(t *testing.T) {
		fake, _ := impostor(t, 100)
		c := dialingClient(t, NewSecret(), func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", fake)
		})
		client, local := testsvc.TCPPair(t)
		client.Write(bytes.Repeat([]byte("x"), 1000))
		_, err := c.Open(context.Background(), local, "127.0.0.1", echoServer(t), true, StreamOptions{})
		if !errors.Is(err, ErrEarlyStreamLost) || !errors.Is(err, ErrAgentProof) {
			t.Fatalf("Open: %v, want ErrEarlyStreamLost and the cause", err)
		}
		client.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the client read %v, want a reset", err)
		}
	})
	t.Run("read nothing", func(t *testing.T) {
		refused := errors.New("no agent")
		c := NewClient(ClientOptions{Connect: func(context.Context, Hello) (*Session, bool, error) { return nil, false, refused },
			Buffer: 256 << 10, ResumeWindow: 10 * time.Second, IdleTimeout: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t))})
		t.Cleanup(c.Close)
		client, local := testsvc.TCPPair(t)
		client.Write([]byte("still yours"))
		if _, err := c.Open(context.Background(), local, "127.0.0.1", 1, true, StreamOptions{}); !errors.Is(err, refused) || errors.Is(err, ErrEarlyStreamLost) {
			t.Fatalf("Open: %v, want the connect's error alone", err)
		}
		echoOnceRead(t, local, []byte("still yours"))
	})
}

// TestEarlyStreamAnsweredBeforeSessionUp: a server that speaks first (ssh,
// SMTP) answers the early stream as soon as the agent dials it, which can
// be before the client has taken the session. The answered stream is the
// new session's own, not an orphan of an earlier one.
func TestEarlyStreamAnsweredBeforeSessionUp(t *testing.T) {
	target := testsvc.Serve(t, func(c net.Conn) {
		c.Write([]byte("SSH-2.0-banner\r\n"))
		io.Copy(c, c)
	})
	rig := newAgentRig(t)
	connect := func(ctx context.Context, h Hello) (*Session, bool, error) {
		s, resumed, err := rig.connect(ctx, h)
		if err == nil && len(h.open) == 1 {
			testsvc.Eventually(t, "the banner reached the early stream", func() bool { return h.open[0].st.Received() > 0 })
		}
		return s, resumed, err
	}
	c := NewClient(ClientOptions{Connect: connect, Buffer: 256 << 10, ResumeWindow: 10 * time.Second, IdleTimeout: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	client, local := testsvc.TCPPair(t)
	host, port := splitHostPort(t, target)
	st, err := c.Open(context.Background(), local, host, port, true, StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	echoOnceRead(t, client, []byte("SSH-2.0-banner\r\n"))
	echoOnce(t, client, []byte("then the client"))
	client.CloseWrite()
	io.Copy(io.Discard, client)
	<-st.Done()
	if err := st.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
}

// TestUnsealNeedsTheLastRecord: a link that ends between records, before
// the empty last one, was cut: the bytes before are handed on, then an
// error, never a clean end.
func TestUnsealNeedsTheLastRecord(t *testing.T) {
	secret, d, a, body := testSealKey(t)
	var link bytes.Buffer
	s := newSealer(rwc{Writer: &link}, sealKey(secret, d, a, body))
	s.Write([]byte("first"))
	got, err := io.ReadAll(newUnsealer(rwc{Reader: &link}, sealKey(secret, d, a, body)))
	if string(got) != "first" || !errors.Is(err, ErrProtocol) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %q, %v; want \"first\", then a link cut short", got, err)
	}
}
