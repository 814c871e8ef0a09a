package mux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sock"
)

// echoServer stands for the server inside the sprite.
func echoServer(t *testing.T) int {
	_, port, _ := net.SplitHostPort(testsvc.Serve(t, testsvc.Echo))
	n, _ := strconv.Atoi(port)
	return n
}

// agentRig runs a Server behind a listener, and hands out links to it that
// the test can cut, as the API's edge cuts a WebSocket.
type agentRig struct {
	t      *testing.T
	secret string
	addr   string
	srv    *Server
	mu     sync.Mutex
	links  []net.Conn
	ln     net.Listener
}

func newAgentRig(t *testing.T) *agentRig {
	r := &agentRig{t: t, secret: NewSecret()}
	r.start()
	return r
}

func (r *agentRig) start() {
	r.mu.Lock()
	addr := r.addr
	r.mu.Unlock()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.ln, r.addr = ln, ln.Addr().String()
	r.mu.Unlock()
	srv := &Server{Secret: r.secret, Log: zerolog.Nop(), Dial: func(ctx context.Context, host string, port int) (sock.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}}
	r.srv = srv
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); srv.ServeConn(c) }()
		}
	}()
	r.t.Cleanup(func() { ln.Close(); srv.Close(); wg.Wait() })
}

// restart replaces the agent with a new process's worth of state.
func (r *agentRig) restart() {
	r.ln.Close()
	r.cut()
	r.srv.Close()
	r.start()
}

// connect dials as the daemon does, retrying what a cut can break.
func (r *agentRig) connect(ctx context.Context, h Hello) (*Session, bool, error) {
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		addr := r.addr
		r.mu.Unlock()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, false, err
		}
		r.mu.Lock()
		r.links = append(r.links, c)
		r.mu.Unlock()
		s, resumed, err := Dial(ctx, c, r.secret, h, zerolog.Nop())
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrBadSecret) {
			return s, resumed, err
		}
	}
}

func (r *agentRig) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.links {
		c.Close()
	}
	r.links = nil
}

func newClient(t *testing.T, r *agentRig) *Client {
	c := NewClient(ClientOptions{Connect: r.connect, Buffer: 256 << 10, ResumeWindow: 10 * time.Second, IdleTimeout: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t))})
	t.Cleanup(c.Close)
	return c
}

// openPair opens a stream for a fresh local connection and returns the
// client's end of it.
func openPair(t *testing.T, c *Client, port int) (*net.TCPConn, *Stream) {
	t.Helper()
	client, local := testsvc.TCPPair(t)
	st, err := c.Open(context.Background(), local, "127.0.0.1", port, true, StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return client, st
}

// transfer writes n random bytes and checks the echo.
func transfer(c *net.TCPConn, n int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 1))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	errc := make(chan error, 1)
	go func() {
		for p := data; len(p) > 0; {
			k := min(len(p), 1+rng.IntN(64<<10))
			if _, err := c.Write(p[:k]); err != nil {
				errc <- err
				return
			}
			p = p[k:]
			time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
		}
		errc <- c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("echo differs: got %d of %d bytes", len(got), n)
	}
	return nil
}

func TestClientStreamsEchoAndHalfClose(t *testing.T) {
	port := echoServer(t)
	rig := newAgentRig(t)
	c := newClient(t, rig)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client, st := openPair(t, c, port)
			if err := transfer(client, 200<<10, uint64(i)); err != nil {
				t.Error(err)
			}
			<-st.Done()
			if st.Err() != nil {
				t.Errorf("stream %d ended with %v, want a clean end", i, st.Err())
			}
		}()
	}
	wg.Wait()
	if s := c.Stats(); s.Sessions != 1 || s.Resumptions != 0 {
		t.Errorf("%d sessions and %d resumptions for 20 streams and no drop, want 1 and 0", s.Sessions, s.Resumptions)
	}
}

func TestClientResumesStreamsAcrossLinkDrops(t *testing.T) {
	port := echoServer(t)
	rig := newAgentRig(t)
	c := newClient(t, rig)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client, st := openPair(t, c, port)
			if err := transfer(client, 4<<20, uint64(i)); err != nil {
				<-st.Done()
				t.Errorf("stream %d: %v (stream: %v)", st.ID(), err, st.Err())
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	cuts := 0
	for {
		select {
		case <-done:
			s := c.Stats()
			t.Logf("%d cuts, %d sessions, %d resumptions", cuts, s.Sessions, s.Resumptions)
			if cuts > 0 && s.Resumptions == 0 {
				t.Error("links were cut but nothing resumed")
			}
			return
		case <-time.After(time.Duration(20+rand.IntN(200)) * time.Millisecond):
			rig.cut()
			cuts++
		}
	}
}

func TestClientAgentRestartResetsStreams(t *testing.T) {
	port := echoServer(t)
	rig := newAgentRig(t)
	c := newClient(t, rig)
	client, st := openPair(t, c, port)
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(client, buf); err != nil {
		t.Fatal(err)
	}
	rig.restart()
	<-st.Done()
	if !errors.Is(st.Err(), ErrUnknownStream) {
		t.Fatalf("stream ended with %v, want ErrUnknownStream", st.Err())
	}
	if _, err := client.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %v, want ECONNRESET", err)
	}
	// New connections work on the new agent.
	client2, _ := openPair(t, c, port)
	if err := transfer(client2, 10<<10, 1); err != nil {
		t.Fatal(err)
	}
}

func TestAgentRefusesWrongSecret(t *testing.T) {
	rig := newAgentRig(t)
	c, err := net.Dial("tcp", rig.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = Dial(context.Background(), c, NewSecret(), Hello{Session: NewSessionID(), Buffer: DefaultBuffer, ResumeWindow: time.Second}, zerolog.Nop())
	if !errors.Is(err, ErrBadSecret) {
		t.Fatalf("wrong secret: %v, want ErrBadSecret", err)
	}
	// Speaking yamux straight away, without the handshake, gets nowhere
	// either: the agent reads it as a failed hello and hangs up.
	c2, err := net.Dial("tcp", rig.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write(make([]byte, greetingLen+proofLen))
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, _ := io.ReadAll(c2)
	if len(rest) > greetingLen+4+len("bad hello") {
		t.Fatalf("agent sent %d bytes to a client without the secret", len(rest))
	}
}
