package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

// holeRig puts a path between the daemon's sessions and the agent that can
// go dead without a word, as a link whose laptop slept or whose NAT forgot
// it: bytes sent into it vanish, and neither end sees a close.
type holeRig struct {
	*agentRig
	mu    sync.Mutex
	paths []*holePath
	dials atomic.Int64
}

type holePath struct {
	dead           atomic.Bool
	daemon, toward net.Conn
}

func newHoleRig(t *testing.T) *holeRig { return &holeRig{agentRig: newAgentRig(t)} }

func (h *holeRig) connect(ctx context.Context, hello Hello) (*Session, bool, error) {
	h.dials.Add(1)
	daemon, near := testsvc.TCPPair(h.t)
	h.mu.Lock()
	addr := h.addr
	h.mu.Unlock()
	var d net.Dialer
	agent, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		daemon.Close()
		near.Close()
		return nil, false, err
	}
	p := &holePath{daemon: near, toward: agent}
	h.mu.Lock()
	h.paths = append(h.paths, p)
	h.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if p.dead.Load() {
				if err != nil && src == near {
					agent.Close() // the daemon gave up on the path
				}
				if err != nil {
					return
				}
				continue // into the hole
			}
			if n > 0 {
				dst.Write(buf[:n])
			}
			if err != nil {
				near.Close()
				agent.Close()
				return
			}
		}
	}
	go pipe(agent, near)
	go pipe(near, agent)
	return Dial(ctx, daemon, h.secret, hello, zerolog.Nop())
}

// kill makes every path so far dead.
func (h *holeRig) kill() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.paths {
		p.dead.Store(true)
	}
}

func (h *holeRig) client(t *testing.T, window time.Duration) *Client {
	c := NewClient(ClientOptions{Connect: h.connect, Buffer: 256 << 10, ResumeWindow: window, IdleTimeout: time.Minute,
		ProbeAfter: time.Nanosecond, Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	return c
}

// echoOnce writes msg on c and reads exactly its echo back.
func echoOnce(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a failure detector
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// TestQuietSessionOpensAtOnce: on a session quiet for longer than
// ProbeAfter, a new stream is not held back for a ping; a live agent
// answers the ping behind it, and the session stays.
func TestQuietSessionOpensAtOnce(t *testing.T) {
	port := echoServer(t)
	h := newHoleRig(t)
	c := h.client(t, 10*time.Second)
	for i := range 3 {
		client, local := testsvc.TCPPair(t)
		st, err := c.Open(context.Background(), local, "127.0.0.1", port, true, StreamOptions{})
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, client, []byte("hello"))
		if i > 0 { // the first opens with the session, behind its proof: no probe
			testsvc.Eventually(t, "the probe is answered", func() bool { return !st.unconfirmed.Load() })
		}
		client.CloseWrite()
		io.Copy(io.Discard, client)
		<-st.Done()
		if err := st.Err(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if s := c.Stats(); s.Sessions != 1 || s.Resumptions != 0 {
		t.Errorf("%d sessions, %d resumptions; want 1 and 0 (every probe answered)", s.Sessions, s.Resumptions)
	}
}

// TestOpenOnDeadQuietSession: the session died without a word while it
// was quiet. The stream opens on it at once, with its first bytes; the
// ping behind them goes unanswered, the session is redialled, and the
// stream goes on there: its bytes reach the target once, and its client
// gets every byte of the reply once. Twice over: with the agent alive (it
// answers that it never saw the open) and restarted (it knows nothing).
func TestOpenOnDeadQuietSession(t *testing.T) {
	for _, restart := range []bool{false, true} {
		name := map[bool]string{false: "agent alive", true: "agent restarted"}[restart]
		t.Run(name, func(t *testing.T) {
			port := echoServer(t)
			h := newHoleRig(t)
			c := h.client(t, 10*time.Second)
			warm, local := testsvc.TCPPair(t)
			first, err := c.Open(context.Background(), local, "127.0.0.1", port, true, StreamOptions{})
			if err != nil {
				t.Fatal(err)
			}
			echoOnce(t, warm, []byte("up"))
			warm.CloseWrite()
			io.Copy(io.Discard, warm)
			<-first.Done()

			h.kill()
			if restart {
				h.agentRig.restart()
			}
			client, local := testsvc.TCPPair(t)
			start := time.Now()
			st, err := c.Open(context.Background(), local, "127.0.0.1", port, true, StreamOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took >= minProbeTimeout {
				t.Errorf("Open took %v on a dead session: it waited for the probe", took)
			}
			// 300 KiB: more than a yamux window's first flight, less than
			// the stream's buffer, so all of it waits for the replay.
			err = transfer(client, 300<<10, 7)
			<-st.Done()
			if err != nil || st.Err() != nil {
				t.Fatalf("the stream opened on the dead session: %v (stream: %v)", err, st.Err())
			}
			if n := h.dials.Load(); n != 2 {
				t.Errorf("%d sessions dialled, want 2", n)
			}
			if s := c.Stats(); s.Resumptions != 1 {
				t.Errorf("%d resumptions, want 1", s.Resumptions)
			}
		})
	}
}

// TestAnsweredStreamDoesNotReopen: a stream some of whose bytes came back
// is known to the agent; when a restarted agent knows nothing of it, it
// resets, rather than send its first bytes to the target a second time.
func TestAnsweredStreamDoesNotReopen(t *testing.T) {
	port := echoServer(t)
	h := newHoleRig(t)
	c := h.client(t, 10*time.Second)
	client, local := testsvc.TCPPair(t)
	st, err := c.Open(context.Background(), local, "127.0.0.1", port, true, StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The stream opened with the session, ahead of the agent's proof, so
	// it is unconfirmed; so is one whose probe is still on its way.
	echoOnce(t, client, []byte("once"))
	st.unconfirmed.Store(true)
	h.kill()
	h.agentRig.restart()
	c.Probe()
	<-st.Done()
	if !errors.Is(st.Err(), ErrUnknownStream) {
		t.Fatalf("stream ended with %v, want ErrUnknownStream", st.Err())
	}
}

// TestProbeTimeout: a probe waits a few round trips, within its bounds.
func TestProbeTimeout(t *testing.T) {
	for _, tc := range []struct{ rtt, want time.Duration }{
		{0, minProbeTimeout},
		{200 * time.Millisecond, minProbeTimeout},
		{300 * time.Millisecond, 2200 * time.Millisecond},
		{500 * time.Millisecond, 3 * time.Second},
		{2 * time.Second, probeTimeout},
	} {
		var s Session
		s.rtt.Store(int64(tc.rtt))
		if got := s.ProbeTimeout(); got != tc.want {
			t.Errorf("round trip %v: probe timeout %v, want %v", tc.rtt, got, tc.want)
		}
	}
}

// TestRedialSendsResumesWithHello: when a link drops under open streams,
// the redial's hello carries their resumes (ids and received counts), so
// the agent's answers are on their way as soon as it has proved the
// secret, and the streams go on intact.
func TestRedialSendsResumesWithHello(t *testing.T) {
	port := echoServer(t)
	h := newHoleRig(t)
	var mu sync.Mutex
	var hellos []Hello
	var early []int
	connect := func(ctx context.Context, hello Hello) (*Session, bool, error) {
		s, resumed, err := h.connect(ctx, hello)
		if err == nil {
			s.earlyMu.Lock()
			mu.Lock()
			hellos = append(hellos, hello)
			early = append(early, len(s.early))
			mu.Unlock()
			s.earlyMu.Unlock()
		}
		return s, resumed, err
	}
	c := NewClient(ClientOptions{Connect: connect, Buffer: 256 << 10, ResumeWindow: 10 * time.Second, IdleTimeout: time.Minute,
		Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	const n = 3
	clients := make([]*net.TCPConn, n)
	streams := make([]*Stream, n)
	for i := range n {
		client, local := testsvc.TCPPair(t)
		st, err := c.Open(context.Background(), local, "127.0.0.1", port, true, StreamOptions{})
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, client, []byte{byte(i)})
		clients[i], streams[i] = client, st
	}
	h.mu.Lock()
	for _, p := range h.paths {
		p.daemon.Close() // a cut the daemon hears of at once
		p.toward.Close()
	}
	h.mu.Unlock()
	testsvc.Eventually(t, "a second session", func() bool { return c.Stats().Sessions == 2 })
	for i := range n {
		if err := transfer(clients[i], 100<<10, uint64(i)); err != nil {
			t.Fatalf("stream %d after the redial: %v", i, err)
		}
		<-streams[i].Done()
		if err := streams[i].Err(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hellos) < 2 || len(hellos[1].Resume) != n || early[1] != n {
		t.Fatalf("the redial's hello carried %v, and %v resumes went with it; want all %d streams", hellos[len(hellos)-1].Resume, early, n)
	}
	for _, r := range hellos[1].Resume {
		if r.Received != 1 {
			t.Errorf("stream %d resumed from %d, want 1 (its echo)", r.ID, r.Received)
		}
	}
	if s := c.Stats(); s.Resumptions != n {
		t.Errorf("%d resumptions, want %d", s.Resumptions, n)
	}
}
