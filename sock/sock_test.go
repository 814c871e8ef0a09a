package sock

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestEnds(t *testing.T) {
	payload := make([]byte, 256<<10)
	for i := range payload {
		payload[i] = byte(i)
	}
	tests := []struct {
		name      string
		end       func(c net.Conn)
		wantReset bool
	}{
		{"close is a clean EOF", func(c net.Conn) { c.Close() }, false},
		{"abort delivers, then resets", func(c net.Conn) { Abort(c, 5*time.Second) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := pair(t)
			go func() {
				server.Write(payload)
				tt.end(server)
			}()
			got, err := io.ReadAll(client)
			if len(got) != len(payload) {
				t.Fatalf("read %d of %d bytes before %v", len(got), len(payload), err)
			}
			if reset := errors.Is(err, syscall.ECONNRESET); reset != tt.wantReset {
				t.Fatalf("end: %v, want reset %v", err, tt.wantReset)
			}
		})
	}
}

func TestWithoutHalfClose(t *testing.T) {
	client, _ := pair(t)
	if WithoutHalfClose(client) != Conn(client) {
		t.Error("a TCP connection was wrapped though it can half-close")
	}
	w := WithoutHalfClose(struct{ net.Conn }{client})
	if err := w.CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	// A reset still reaches the connection underneath.
	c2, s2 := pair(t)
	Reset(noHalfClose{s2})
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after Reset through the wrapper: %v, want a reset", err)
	}
}
