package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

// TestEarlyStreamLostEndsOnce: Open reports ErrEarlyStreamLost, so its
// caller (tunnel's muxTransport, then forward.serve) accounts for the
// connection's end itself; the stream's OnEnd must not have run as well.
// forward.serve's finish (f.conns.Done, stats.Open) would run twice.
func TestEarlyStreamLostEndsOnce(t *testing.T) {
	fake, _ := impostor(t, 100)
	c := dialingClient(t, NewSecret(), func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", fake)
	})
	client, local := testsvc.TCPPair(t)
	client.Write(bytes.Repeat([]byte("x"), 1000))
	var ends atomic.Int32
	_, err := c.Open(context.Background(), local, "127.0.0.1", echoServer(t), true, StreamOptions{OnEnd: func(*Stream) { ends.Add(1) }})
	if !errors.Is(err, ErrEarlyStreamLost) {
		t.Fatalf("Open: %v, want ErrEarlyStreamLost", err)
	}
	if n := ends.Load(); n != 0 {
		t.Fatalf("Open returned an error, and the stream's OnEnd ran %d time(s) too: the caller ends the connection twice", n)
	}
	if n := c.Stats().Streams; n != 0 {
		t.Fatalf("the client still holds %d streams after the lost one", n)
	}
}

// TestEarlyBytesNotRepeatedOnAnotherAgent: the agent on the first port
// proved the secret, opened the early stream and delivered its bytes, but
// its proof did not reach the daemon within the hello's bound (the pool
// then takes it for "not an agent" and moves to the next port, see
// tunnel/agent.go connect). The daemon read nothing of that link, so the
// stream has nothing received or acknowledged; still it must not open
// again on the next port's agent, which would give the target the
// client's bytes twice. Only its own session may take it, and without
// that the client gets a reset.
func TestEarlyBytesNotRepeatedOnAnotherAgent(t *testing.T) {
	marker := bytes.Repeat([]byte("POST /charge once; "), 50)
	target, delivered := recordingTarget(t, len(marker))
	slow := newAgentRig(t)
	other := &agentRig{t: t, secret: slow.secret}
	other.start()
	hp := &heldPath{release: make(chan struct{})} // never released: the slow agent's proof is late
	var tries atomic.Int32
	connect := func(ctx context.Context, h Hello) (*Session, bool, error) {
		if tries.Add(1) == 1 {
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second) // helloTimeout, shortened
			defer cancel()
			link, err := hp.dial(t, hctx, slow.addr)
			if err != nil {
				return nil, false, err
			}
			if _, _, err := Dial(hctx, link, slow.secret, h, zerolog.Nop()); err == nil {
				t.Error("the held handshake succeeded")
			}
			// as agentPool.connect: ErrNotAgent, moveOn, the next port
		}
		return other.connect(ctx, h)
	}
	c := NewClient(ClientOptions{Connect: connect, Buffer: 256 << 10, ResumeWindow: 10 * time.Second, IdleTimeout: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	client, local := testsvc.TCPPair(t)
	client.Write(marker)
	host, port := splitHostPort(t, target)
	st, err := c.Open(context.Background(), local, host, port, true, StreamOptions{})
	if err != nil {
		// Reset, not opened again: the bytes reached the target once.
		if !errors.Is(err, ErrEarlyStreamLost) {
			t.Fatal(err)
		}
	} else {
		// A stream that opened again would have replayed its bytes before
		// its end could come.
		client.CloseWrite()
		select {
		case <-st.Done():
		case <-time.After(30 * time.Second): // a failure detector
			t.Fatal("the stream did not end")
		}
	}
	testsvc.Eventually(t, "the target got the client's bytes", func() bool { return len(delivered()) >= len(marker) })
	if n := len(delivered()); n != len(marker) {
		t.Fatalf("the target got %d bytes, the client sent %d: delivered %d times", n, len(marker), n/len(marker))
	}
}

// TestCloseDuringDialLeavesUnclaimedConn: Client.Close while the
// first dial is under way and no link has taken the early stream. Open
// says ErrClientClosed without ErrEarlyStreamLost, which tells
// muxTransport to take the connection to the pool's successor; so the
// connection must be untouched, as on the usual path (ResumeWindow 0),
// and the stream's OnEnd must not have run.
func TestCloseDuringDialLeavesUnclaimedConn(t *testing.T) {
	for _, window := range []time.Duration{0, 10 * time.Second} {
		t.Run(window.String(), func(t *testing.T) {
			c := NewClient(ClientOptions{Connect: func(ctx context.Context, h Hello) (*Session, bool, error) {
				<-ctx.Done() // a sprite waking
				return nil, false, ctx.Err()
			}, Buffer: 256 << 10, ResumeWindow: window, IdleTimeout: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t))})
			client, local := testsvc.TCPPair(t)
			var ends atomic.Int32
			opened := make(chan error, 1)
			go func() {
				_, err := c.Open(context.Background(), local, "127.0.0.1", 1, true, StreamOptions{OnEnd: func(*Stream) { ends.Add(1) }})
				opened <- err
			}()
			testsvc.Eventually(t, "the dial under way", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.dialing != nil
			})
			c.Close()
			err := <-opened
			if !errors.Is(err, ErrClientClosed) || errors.Is(err, ErrEarlyStreamLost) {
				t.Fatalf("Open: %v", err)
			}
			if n := ends.Load(); n != 0 {
				t.Errorf("OnEnd ran %d time(s) for a stream Open did not return", n)
			}
			client.Write([]byte("still yours"))
			echoOnceRead(t, local, []byte("still yours"))
		})
	}
}

// TestEarlyStreamReopensAfterRefusal: the agent on the port belongs to
// another deployment. It refuses our proof, with 200 KiB of the early
// stream sealed behind it that it cannot open; that verdict lets the
// stream open again on our own agent, where every byte arrives once.
// (Through the API's proxy the refusal could be lost to the reset of a
// socket closed with bytes unread: see drainClose, and the e2e tests
// TestE2EMuxRecordStale and TestE2EMuxRedeployOverRunningAgent.)
func TestEarlyStreamReopensAfterRefusal(t *testing.T) {
	other := newAgentRig(t)
	ours := newAgentRig(t)
	connect, errs := firstProven(ours.secret, other.addr, ours.addr)
	c := NewClient(ClientOptions{Connect: connect, Buffer: 256 << 10, ResumeWindow: 10 * time.Second, IdleTimeout: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	client, local := testsvc.TCPPair(t)
	req := bytes.Repeat([]byte("a request to repeat once; "), 8000) // 200 KiB, most of it unread by the other agent
	go func() {
		client.Write(req)
		client.CloseWrite()
	}()
	st, err := c.Open(context.Background(), local, "127.0.0.1", echoServer(t), true, StreamOptions{})
	if err != nil {
		t.Fatalf("Open: %v (handshakes: %v)", err, *errs)
	}
	client.SetReadDeadline(time.Now().Add(30 * time.Second)) // a failure detector
	got, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("echo: %d of %d bytes, %v", len(got), len(req), err)
	}
	<-st.Done()
	if errs := *errs; len(errs) != 1 || !errors.Is(errs[0], ErrBadSecret) {
		t.Fatalf("the other agent's answer: %v, want its refusal", errs)
	}
}
