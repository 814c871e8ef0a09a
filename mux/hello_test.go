package mux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// connPair returns the two ends of a loopback TCP connection: the
// handshake needs ends that take a greeting without the peer reading.
func connPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	deadline := time.Now().Add(10 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	return a, b
}

// recorder keeps what was written through it.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recorder) written() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.out.Bytes())
}

func testHello() Hello {
	return Hello{Session: NewSessionID(), ResumeWindow: time.Second, Buffer: DefaultBuffer}
}

// genuineReply runs one real handshake and returns what the agent sent:
// its greeting and its reply, proof included, for an impostor to replay.
func genuineReply(t *testing.T, secret string) []byte {
	d, a := connPair(t)
	rec := &recorder{Conn: a}
	errc := make(chan error, 1)
	go func() { _, _, err := AcceptHello(rec, secret, nil); errc <- err }()
	if _, err := ClientHello(d, secret, testHello()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return rec.written()
}

// The daemon's side against what may answer on the agent's port: only an
// agent that proves the secret gets a session, and nothing answers an
// impostor but the handshake.
func TestClientHelloRefusesImpostors(t *testing.T) {
	secret := NewSecret()
	replay := genuineReply(t, secret)
	tests := []struct {
		name    string
		agent   func(c net.Conn) // plays the agent; returns when it is done
		want    error            // nil: accepted
		resumed bool
	}{
		{name: "genuine agent", agent: func(c net.Conn) { AcceptHello(c, secret, nil) }},
		{name: "genuine agent that knows the session", resumed: true,
			agent: func(c net.Conn) { AcceptHello(c, secret, func(SessionID) bool { return true }) }},
		{name: "agent of another deployment", want: ErrBadSecret,
			agent: func(c net.Conn) { AcceptHello(c, NewSecret(), nil) }},
		{name: "version 1 hello answered with a zero status", want: ErrVersion,
			agent: func(c net.Conn) {
				c.Write(append([]byte("SFWD\x01"), make([]byte, 32)...))
				if _, err := io.ReadFull(c, make([]byte, 61)); err == nil {
					c.Write([]byte{0, 0, 0, 0})
				}
			}},
		{name: "version 2 agent, which sends reset reasons as text only", want: ErrVersion,
			agent: func(c net.Conn) {
				g := greeting(roleAgent)
				g[4] = 2
				c.Write(g)
				io.Copy(io.Discard, c)
			}},
		{name: "version 4 agent, whose windows do not grow on a budget", want: ErrVersion,
			agent: func(c net.Conn) {
				g := greeting(roleAgent)
				g[4] = 4
				c.Write(g)
				io.Copy(io.Discard, c)
			}},
		{name: "version 3 agent, which cannot watch ports", want: ErrVersion,
			agent: func(c net.Conn) {
				g := greeting(roleAgent)
				g[4] = 3
				c.Write(g)
				io.Copy(io.Discard, c)
			}},
		{name: "echo", want: ErrNotAgent, agent: func(c net.Conn) { io.Copy(c, c) }},
		{name: "current greeting, zero status, no proof", want: ErrAgentProof,
			agent: func(c net.Conn) {
				c.Write(greeting(roleAgent))
				io.ReadFull(c, make([]byte, greetingLen+proofLen))
				c.Write([]byte{statusOK, 0, 0, 0})
			}},
		{name: "zero proof", want: ErrAgentProof,
			agent: func(c net.Conn) {
				c.Write(greeting(roleAgent))
				io.ReadFull(c, make([]byte, greetingLen+proofLen))
				c.Write(append([]byte{statusOK, 0, 0, 0}, make([]byte, 32)...))
			}},
		{name: "the daemon's own proof reflected", want: ErrAgentProof,
			agent: func(c net.Conn) {
				c.Write(greeting(roleAgent))
				in := make([]byte, greetingLen+proofLen)
				io.ReadFull(c, in)
				c.Write(append([]byte{statusOK, 0, 0, 0}, in[greetingLen+bodyLen:]...))
			}},
		{name: "a genuine agent's earlier answer replayed", want: ErrAgentProof,
			agent: func(c net.Conn) {
				c.Write(replay[:greetingLen])
				io.ReadFull(c, make([]byte, greetingLen+proofLen))
				c.Write(replay[greetingLen:])
			}},
		{name: "the daemon's greeting reflected with a new role", want: ErrNotAgent,
			agent: func(c net.Conn) {
				g := make([]byte, greetingLen)
				io.ReadFull(c, g)
				g[5] = roleAgent
				c.Write(g)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, a := connPair(t)
			got := make(chan []byte, 1) // what the agent's end read
			go func() {
				tee := &teeConn{Conn: a}
				tt.agent(tee)
				a.Close()
				got <- tee.read()
			}()
			resumed, err := ClientHello(d, secret, testHello())
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("ClientHello: %v, want %v", err, tt.want)
			}
			if err == nil && resumed != tt.resumed {
				t.Fatalf("resumed %v, want %v", resumed, tt.resumed)
			}
			d.Close()
			if read := <-got; len(read) > greetingLen+proofLen {
				t.Fatalf("the agent's end read %d bytes, more than the handshake's %d", len(read), greetingLen+proofLen)
			}
		})
	}
}

// teeConn keeps what was read through it.
type teeConn struct {
	net.Conn
	mu sync.Mutex
	in bytes.Buffer
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *teeConn) read() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.in.Bytes())
}

// The agent's side against strangers: it refuses every daemon that does
// not prove the secret, and proves nothing to it in return.
func TestAcceptHelloRefusesStrangers(t *testing.T) {
	secret := NewSecret()
	tests := []struct {
		name   string
		daemon func(c net.Conn)
		want   error
	}{
		{name: "wrong secret", want: ErrBadSecret,
			daemon: func(c net.Conn) { ClientHello(c, NewSecret(), testHello()) }},
		{name: "version 1 hello", want: ErrProtocol,
			daemon: func(c net.Conn) { c.Write(append([]byte("SFWD\x01"), make([]byte, 60)...)) }},
		{name: "the agent's greeting reflected", want: ErrProtocol,
			daemon: func(c net.Conn) {
				g := make([]byte, greetingLen)
				io.ReadFull(c, g)
				c.Write(g)
				c.Write(make([]byte, proofLen))
			}},
		{name: "zero proof", want: ErrBadSecret,
			daemon: func(c net.Conn) {
				c.Write(greeting(roleDaemon))
				c.Write(make([]byte, proofLen))
			}},
		{name: "silence", want: ErrBadSecret, daemon: func(c net.Conn) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, a := connPair(t)
			rec := &recorder{Conn: a}
			go func() {
				tt.daemon(d)
				d.(*net.TCPConn).CloseWrite()
			}()
			if _, _, err := AcceptHello(rec, secret, nil); !errors.Is(err, tt.want) {
				t.Fatalf("AcceptHello: %v, want %v", err, tt.want)
			}
			// A greeting and a refusal, never a proof a stranger could use.
			if n := len(rec.written()); n > greetingLen+4+len("buffer out of range") {
				t.Fatalf("the agent sent a stranger %d bytes", n)
			}
		})
	}
}
