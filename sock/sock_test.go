package sock

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
			client, server := testsvc.TCPPair(t)
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
	client, _ := testsvc.TCPPair(t)
	if WithoutHalfClose(client) != Conn(client) {
		t.Error("a TCP connection was wrapped though it can half-close")
	}
	w := WithoutHalfClose(struct{ net.Conn }{client})
	if err := w.CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	// A reset still reaches the connection underneath.
	c2, s2 := testsvc.TCPPair(t)
	Reset(noHalfClose{s2})
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after Reset through the wrapper: %v, want a reset", err)
	}
}
