package mux

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestCloseWhenIdle: a client replaced by a reload keeps serving the
// stream it has, takes no new one, and closes when that stream ends.
func TestCloseWhenIdle(t *testing.T) {
	port := echoServer(t)
	c := newClient(t, newAgentRig(t))
	client, st := openPair(t, c, port)
	closed := make(chan struct{})
	c.CloseWhenIdle(func() { close(closed) })
	// Retiring, it takes no new stream, though one is still open.
	if _, err := c.Open(context.Background(), nil, "127.0.0.1", port, true, StreamOptions{}); !errors.Is(err, ErrClientClosed) {
		t.Errorf("Open on a retiring client: %v, want ErrClientClosed", err)
	}
	if err := transfer(client, 64<<10, 1); err != nil {
		t.Fatalf("the open stream after CloseWhenIdle: %v", err)
	}
	<-st.Done()
	select {
	case <-closed:
	case <-time.After(10 * time.Second): // a failure detector, not a timing
		t.Fatal("the client did not close after its last stream ended")
	}
	if _, err := c.Open(context.Background(), nil, "127.0.0.1", port, true, StreamOptions{}); !errors.Is(err, ErrClientClosed) {
		t.Errorf("Open on the closed client: %v, want ErrClientClosed", err)
	}

	idle := newClient(t, newAgentRig(t))
	done := make(chan struct{})
	idle.CloseWhenIdle(func() { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a client with no stream did not close at once")
	}
}

// TestRetiredWhileConnecting: an Open still waiting for the client's first
// session when a reload retires the client gets ErrClientClosed, which
// tells its caller to take the successor, not the connect's cancellation.
func TestRetiredWhileConnecting(t *testing.T) {
	connecting := make(chan struct{})
	c := NewClient(ClientOptions{Connect: func(ctx context.Context, _ Hello) (*Session, bool, error) {
		close(connecting)
		<-ctx.Done() // the deploy is still running when the client closes
		return nil, false, ctx.Err()
	}})
	opened := make(chan error, 1)
	go func() {
		_, err := c.Open(context.Background(), nil, "127.0.0.1", 1, true, StreamOptions{})
		opened <- err
	}()
	<-connecting
	closed := make(chan struct{})
	c.CloseWhenIdle(func() { close(closed) })
	if err := <-opened; !errors.Is(err, ErrClientClosed) {
		t.Errorf("Open during the retirement: %v, want ErrClientClosed", err)
	}
	<-closed
}
