package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// memLocal is the relay's end of an in-memory client connection. The
// relay's timers are tested in a synctest bubble, which real sockets cannot
// join; unlike net.Pipe this connection half-closes, and it records whether
// the relay ended it with a FIN or a reset.
type memLocal struct {
	net.Conn                // the relay writes here; the client reads the other end
	up       *io.PipeReader // what the client sends
	fin, rst atomic.Bool
}

func (l *memLocal) Read(p []byte) (int, error) { return l.up.Read(p) }
func (l *memLocal) CloseWrite() error          { l.fin.Store(true); return l.Conn.Close() }

// SetLinger is how mux.Reset asks for a reset.
func (l *memLocal) SetLinger(int) error { l.rst.Store(true); return nil }

func (l *memLocal) Close() error {
	l.up.CloseWithError(net.ErrClosed)
	return l.Conn.Close()
}

// memClient is the user's program at the other end of a memLocal.
type memClient struct {
	net.Conn // reads what the relay wrote
	up       *io.PipeWriter
}

func (c *memClient) Write(p []byte) (int, error) { return c.up.Write(p) }
func (c *memClient) CloseWrite() error           { return c.up.Close() }

func memPair() (*memClient, *memLocal) {
	ur, uw := io.Pipe()
	relaySide, clientSide := net.Pipe()
	return &memClient{Conn: clientSide, up: uw}, &memLocal{Conn: relaySide, up: ur}
}

// TestRelayTimers runs the relay's clocks, the half-close timeout and the
// keepalive tick, in virtual time: timeouts of realistic length take no
// real time, and each end lands at an instant the test can state.
func TestRelayTimers(t *testing.T) {
	const (
		halfClose = 30 * time.Second
		interval  = 15 * time.Second // keepalive
	)
	for _, tt := range []struct {
		name      string
		keepalive bool // tick a Keepalive every interval
		pongs     bool // the link answers its pings
		stalled   bool // the client reads nothing
		// play is the client and the server in the sprite; the relay's end
		// is timed from when it returns.
		play func(c *memClient, sprite net.Conn)
		// The relay ends within [after, after+slack] of play's return.
		after, slack time.Duration
		wantEnd      End
		wantErr      error
		wantData     string // what the client read
	}{
		{
			name:  "sprite silent after the half-close",
			play:  func(c *memClient, _ net.Conn) { c.Write([]byte("query")); c.CloseWrite() },
			after: halfClose, slack: halfClose / 4, // the timeout is checked every quarter
			wantEnd: EndRemoteSilent,
		},
		{
			name: "replies keep a half-closed relay open",
			play: func(c *memClient, sprite net.Conn) {
				c.CloseWrite()
				for range 8 {
					time.Sleep(halfClose / 2) // virtual
					sprite.Write([]byte("."))
				}
			},
			after: halfClose, slack: halfClose / 4,
			wantEnd: EndRemoteSilent, wantData: "........",
		},
		{
			// The timeout counts from the half-close, not from the last
			// byte before it: a sprite quiet for a while before the FIN
			// still gets the whole of it to answer.
			name: "sprite quiet before the half-close",
			play: func(c *memClient, _ net.Conn) {
				time.Sleep(2 * halfClose) // virtual
				c.CloseWrite()
			},
			after: halfClose, slack: halfClose / 4,
			wantEnd: EndRemoteSilent,
		},
		{
			name:    "client stops reading after the half-close",
			stalled: true,
			play:    func(c *memClient, sprite net.Conn) { c.CloseWrite(); sprite.Write([]byte("reply")) },
			after:   halfClose, slack: halfClose / 4,
			wantEnd: EndClientStalled,
		},
		{
			name:      "unanswered pings: dead after two intervals",
			keepalive: true,
			play:      func(*memClient, net.Conn) {},
			// mux.Abort waits up to 50 ms for the drain where it cannot
			// see the socket's send queue, as here.
			after: 2 * interval, slack: 50 * time.Millisecond,
			wantEnd: EndLinkBroken, wantErr: ErrLinkDead,
		},
		{
			name:      "answered pings keep an idle link",
			keepalive: true, pongs: true,
			play: func(_ *memClient, sprite net.Conn) {
				time.Sleep(10 * interval) // virtual
				sprite.Close()
			},
			wantEnd: EndClean,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client, local := memPair()
				ours, sprite := net.Pipe()
				remote := &fakeRemote{Conn: ours}
				var busy atomic.Bool
				opts := RelayOptions{HalfCloseTimeout: halfClose, DrainTimeout: 5 * time.Second, Busy: &busy}
				p := &fakePinger{clock: SystemClock{}, answer: tt.pongs, seen: time.Now()}
				k := &Keepalive{Pinger: p, Interval: interval, Clock: SystemClock{}, Busy: &busy}
				kctx, stopPings := context.WithCancel(context.Background())
				if tt.keepalive {
					ticker := time.NewTicker(interval)
					defer ticker.Stop()
					opts.Tick = ticker.C
					opts.OnTick = func() error { return k.Tick(kctx) }
				}
				done := make(chan RelayResult, 1)
				go func() { done <- Relay(local, remote, opts) }()
				go io.Copy(io.Discard, sprite)
				got := make(chan string, 1)
				if !tt.stalled {
					go func() { b, _ := io.ReadAll(client); got <- string(b) }()
				}

				tt.play(client, sprite)
				from := time.Now()
				res := <-done
				took := time.Since(from)
				stopPings()
				k.Wait()
				sprite.Close()
				client.Close()

				if res.End != tt.wantEnd || (tt.wantErr != nil && !errors.Is(res.Err, tt.wantErr)) {
					t.Errorf("end %v (%v), want %v (%v)", res.End, res.Err, tt.wantEnd, tt.wantErr)
				}
				if took < tt.after || took > tt.after+tt.slack {
					t.Errorf("ended %v after play, want %v to %v", took, tt.after, tt.after+tt.slack)
				}
				clean := tt.wantEnd == EndClean
				if local.fin.Load() != clean || local.rst.Load() == clean || remote.closedNow.Load() == clean {
					t.Errorf("client FIN %v, reset %v, link aborted %v; want a %s end", local.fin.Load(), local.rst.Load(), remote.closedNow.Load(), map[bool]string{true: "clean", false: "reset"}[clean])
				}
				if !tt.stalled {
					if data := <-got; data != tt.wantData {
						t.Errorf("client read %q, want %q", data, tt.wantData)
					}
				}
				if tt.pongs && p.pings.Load() < 9 {
					t.Errorf("%d pings in ten intervals", p.pings.Load())
				}
			})
		})
	}
}
