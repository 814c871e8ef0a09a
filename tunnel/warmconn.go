package tunnel

import (
	"context"
	"net"
	"sync"
	"time"
)

// warmOutcome is how a connection begun on a spare got its link.
type warmOutcome int

const (
	warmHit       warmOutcome = iota // the spare said "connected" in time
	warmFallback                     // a fresh dial won the race; the first bytes were replayed on it
	warmFailed                       // neither came up
	warmAbandoned                    // the connection ended first: no outcome to count
)

// SetupError is a failure to set a connection up that shows only once the
// relay runs: a connection begun on a spare link relays the client's first
// bytes before "connected". It wraps what Connect would have returned.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

// warmConn is a connection begun on a spare link. Its init went out at
// once and the client's bytes follow it without waiting, so the first
// answer costs one round trip. Until "connected", it keeps what it sent;
// if "connected" is late, a fresh dial races the spare, and the first to
// connect wins: on a fresh link the kept bytes are replayed, so the sprite
// gets each byte once on the link that carries the connection, and the
// client reads only from that link.
type warmConn struct {
	first  directLink
	redial func(context.Context) (directLink, error)

	settled  chan struct{} // closed once link or err is set
	stopRace context.CancelFunc

	mu        sync.Mutex
	sent      []byte     // written before settling, for a replay
	replaying directLink // a fresh winner while the kept bytes go to it
	link      directLink // the winner, once it has them
	err       error      // why there is none
	closed    bool
}

// startWarm begins relaying on first, a spare just started. after is how
// long "connected" may take before redial races it; done is told the
// outcome once, with the link that won.
func startWarm(ctx context.Context, first directLink, after time.Duration, redial func(context.Context) (directLink, error), done func(warmOutcome, directLink, error)) *warmConn {
	ctx, cancel := context.WithCancel(ctx)
	w := &warmConn{first: first, redial: redial, settled: make(chan struct{}), stopRace: cancel}
	go func() {
		defer cancel()
		how, err := w.race(ctx, after)
		l, _, _ := w.current()
		done(how, l, err)
	}()
	return w
}

type dialResult struct {
	link directLink
	err  error
}

func (w *warmConn) race(ctx context.Context, after time.Duration) (warmOutcome, error) {
	firstUp := make(chan error, 1)
	go func() { firstUp <- w.first.Connected(ctx) }()
	t := time.NewTimer(after)
	defer t.Stop()
	select {
	case err := <-firstUp:
		if err == nil {
			return warmHit, w.settle(w.first)
		}
		firstUp = nil // dead or refused: dial afresh now
	case <-t.C:
	}
	if ctx.Err() != nil {
		return warmAbandoned, ctx.Err() // the client left, or the forward stopped
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	freshUp := make(chan dialResult, 1)
	go func() {
		l, err := w.redial(rctx)
		freshUp <- dialResult{l, err}
	}()
	for {
		select {
		case err := <-firstUp:
			if err != nil {
				firstUp = nil
				continue
			}
			cancel()
			go func() { // a fresh link that came up anyway is not needed
				if r := <-freshUp; r.err == nil {
					r.link.CloseNow()
				}
			}()
			return warmHit, w.settle(w.first)
		case r := <-freshUp:
			w.first.CloseNow()
			if ctx.Err() != nil {
				if r.err == nil {
					r.link.CloseNow()
				}
				return warmAbandoned, ctx.Err()
			}
			if r.err != nil {
				w.fail(r.err)
				return warmFailed, r.err
			}
			return warmFallback, w.settle(r.link)
		}
	}
}

// settle makes l the connection's link. On a fresh link the kept bytes
// are replayed first, outside the lock, so that CloseNow can always
// interrupt a replay that the network holds up; writes meanwhile wait.
func (w *warmConn) settle(l directLink) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		l.CloseNow()
		return net.ErrClosed
	}
	replay := w.sent
	w.sent = nil
	if l == w.first || len(replay) == 0 {
		w.link = l
		close(w.settled)
		w.mu.Unlock()
		return nil
	}
	w.replaying = l
	w.mu.Unlock()
	_, err := l.Write(replay)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.replaying = nil
	if w.closed {
		l.CloseNow() // CloseNow has ended the connection already
		return net.ErrClosed
	}
	if err != nil {
		l.CloseNow()
		w.err = err
		close(w.settled)
		return err
	}
	w.link = l
	close(w.settled)
	return nil
}

func (w *warmConn) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.link == nil && w.err == nil {
		w.err = &SetupError{Err: err}
		w.sent = nil
		close(w.settled)
	}
}

// current is the link once settled, or why there is none; ok is false
// while the race runs.
func (w *warmConn) current() (l directLink, err error, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.link, w.err, w.link != nil || w.err != nil
}

func (w *warmConn) wait() (directLink, error) {
	<-w.settled
	l, err, _ := w.current()
	return l, err
}

// Write sends p on the spare before "connected", keeping a copy, and on
// the winning link after.
func (w *warmConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.link != nil || w.err != nil {
		l, err := w.link, w.err
		w.mu.Unlock()
		if err != nil {
			return 0, err
		}
		return l.Write(p)
	}
	if w.replaying != nil || len(w.sent)+len(p) > maxReplay {
		w.mu.Unlock()
		if _, err := w.wait(); err != nil {
			return 0, err
		}
		return w.Write(p)
	}
	w.sent = append(w.sent, p...)
	w.mu.Unlock()
	// A failure here shows in Connected, and the kept copy covers it.
	w.first.Write(p)
	return len(p), nil
}

// Read reads from the winning link, once there is one.
func (w *warmConn) Read(p []byte) (int, error) {
	l, err := w.wait()
	if err != nil {
		return 0, err
	}
	return l.Read(p)
}

// Ping pings the winning link, once there is one.
func (w *warmConn) Ping(ctx context.Context) error {
	select {
	case <-w.settled:
	case <-ctx.Done():
		return ctx.Err()
	}
	l, err, _ := w.current()
	if err != nil {
		return err
	}
	return l.Ping(ctx)
}

// LastSeen is the winning link's. While the race runs it is now: the race
// has its own bound, and a keepalive must not judge the spare's last pong.
func (w *warmConn) LastSeen() time.Time {
	if l, _, ok := w.current(); ok && l != nil {
		return l.LastSeen()
	}
	return time.Now()
}

// Ready is closed once the race has ended, with a link or without.
func (w *warmConn) Ready() <-chan struct{} { return w.settled }

// Connected waits for the race's end.
func (w *warmConn) Connected(ctx context.Context) error {
	select {
	case <-w.settled:
	case <-ctx.Done():
		return ctx.Err()
	}
	_, err, _ := w.current()
	return err
}

// Target is the winning link's target.
func (w *warmConn) Target() string {
	if l, _, ok := w.current(); ok && l != nil {
		return l.Target()
	}
	return ""
}

// CloseNow aborts the connection, the race included.
func (w *warmConn) CloseNow() error {
	w.mu.Lock()
	w.closed = true
	l, r := w.link, w.replaying
	if l == nil && w.err == nil {
		w.err = net.ErrClosed
		w.sent = nil
		close(w.settled)
	}
	w.mu.Unlock()
	w.stopRace()
	w.first.CloseNow()
	if r != nil {
		r.CloseNow() // ends a replay the network holds up
	}
	if l != nil {
		return l.CloseNow()
	}
	return nil
}

// Close ends the connection with a normal close on its link.
func (w *warmConn) Close() error {
	if l, err, ok := w.current(); ok && err == nil {
		return l.Close()
	}
	return w.CloseNow()
}
