package tunnel

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spritefwd/spritefwd/backoff"
	"github.com/spritefwd/spritefwd/sprites"
)

// stepClock is a fake clock whose After returns at once, moving time ahead
// by the requested amount, so retry loops run instantly and deterministically.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func newStepClock() *stepClock { return &stepClock{now: time.Unix(1_700_000_000, 0)} }

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	c.mu.Unlock()
	return ch
}

// Advance moves the clock forward by d.
func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func spriteErr(class sprites.Class, cause error) error {
	return &sprites.Error{Op: "proxy", Sprite: "db", Port: 5432, Class: class, Err: cause}
}

func TestConnectPolicy(t *testing.T) {
	retryable := spriteErr(sprites.Retryable, sprites.ErrWaking)
	refused := spriteErr(sprites.Refused, sprites.ErrRefused)
	permanent := spriteErr(sprites.Permanent, sprites.ErrUnauthorized)
	for _, tt := range []struct {
		name      string
		errs      []error // returned by successive dials; nil means success
		forever   error   // returned after errs run out, if set
		wantErr   error
		wantDials int
		wantWake  bool
	}{
		{name: "first try", errs: []error{nil}, wantDials: 1},
		{name: "wakes after retries", errs: []error{retryable, retryable, retryable, nil}, wantDials: 4, wantWake: true},
		{name: "permanent fails at once", errs: []error{permanent}, wantErr: sprites.ErrUnauthorized, wantDials: 1},
		{name: "permanent during a wake", errs: []error{retryable, permanent}, wantErr: sprites.ErrUnauthorized, wantDials: 2, wantWake: true},
		{name: "refused a few times", forever: refused, wantErr: ErrNothingListening, wantDials: 4},
		{name: "refused then listening", errs: []error{refused, refused, nil}, wantDials: 3},
		{name: "refused after a wake gets the grace", errs: []error{retryable, refused, refused, refused, refused, refused, nil}, wantDials: 7, wantWake: true},
		{name: "never wakes", forever: retryable, wantErr: ErrWakeTimeout, wantDials: -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := newStepClock()
			w := NewWaker("db", clock, 60*time.Second)
			var woke atomic.Bool
			w.OnWake = func(time.Duration, error) { woke.Store(true) }
			dials := 0
			_, err := Connect(context.Background(), w, 5432, func(context.Context) (int, error) {
				dials++
				if dials <= len(tt.errs) {
					return dials, tt.errs[dials-1]
				}
				if tt.forever != nil {
					return 0, tt.forever
				}
				t.Fatal("dialled past the script")
				return 0, nil
			})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantDials >= 0 && dials != tt.wantDials {
				t.Errorf("dialled %d times, want %d", dials, tt.wantDials)
			}
			if tt.wantDials < 0 && (dials < 20 || dials > 60) {
				t.Errorf("dialled %d times in 60 s of backoff, want about 30", dials)
			}
			if woke.Load() != tt.wantWake && !errors.Is(tt.wantErr, ErrWakeTimeout) {
				t.Errorf("wake reported %v, want %v", woke.Load(), tt.wantWake)
			}
			if err != nil && sprites.IsPermanent(err) && clock.Now().Sub(time.Unix(1_700_000_000, 0)) > time.Second {
				t.Errorf("a permanent error waited %v of backoff", clock.Now().Sub(time.Unix(1_700_000_000, 0)))
			}
		})
	}
}

// TestConnectSharesWake: while a sprite wakes, concurrent connections wait
// for the leader instead of each retrying against the API. It runs in
// virtual time, so the wake takes exactly wakeFor however loaded the
// machine.
func TestConnectSharesWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const wakeFor = 300 * time.Millisecond
		w := NewWaker("db", SystemClock{}, 10*time.Second)
		w.Backoff = backoff.Policy{Min: 5 * time.Millisecond, Max: 10 * time.Millisecond}
		start := time.Now()
		var dials atomic.Int64
		dial := func(context.Context) (bool, error) {
			if time.Since(start) >= wakeFor {
				return true, nil
			}
			dials.Add(1)
			return false, spriteErr(sprites.Retryable, sprites.ErrWaking)
		}
		const conns = 20
		errs := make(chan error, conns)
		for range conns {
			go func() {
				_, err := Connect(context.Background(), w, 5432, dial)
				errs <- err
			}()
		}
		for range conns {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if took := time.Since(start); took < wakeFor || took > wakeFor+w.Backoff.Max {
			t.Errorf("connected after %v, want within a retry of the wake's %v", took, wakeFor)
		}
		// Each connection dials once before it finds the wake to follow;
		// then the leader alone retries, every 5 to 10 ms. Unshared, 20
		// connections × ~30 retries would be ~600 dials.
		if n := dials.Load(); n > conns+int64(wakeFor/w.Backoff.Min) {
			t.Errorf("%d failed dials while waking; the wake was not shared", n)
		}
		if st, _ := w.State(); st != StateRunning {
			t.Errorf("state %v after wake", st)
		}
	})
}

// TestConnectFollowerTakesOver: when the leading connection gives up (its
// client left), a connection that was waiting for it leads the wake
// instead. synctest.Wait orders the steps, so the follower is known to be
// waiting on the leader's wake, not merely late to start one of its own.
func TestConnectFollowerTakesOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := NewWaker("db", SystemClock{}, 10*time.Second)
		w.Backoff = backoff.Policy{Min: 5 * time.Millisecond, Max: 10 * time.Millisecond}
		var awake atomic.Bool
		var dials atomic.Int64
		dial := func(context.Context) (bool, error) {
			dials.Add(1)
			if awake.Load() {
				return true, nil
			}
			return false, spriteErr(sprites.Retryable, sprites.ErrWaking)
		}
		leaderCtx, leaderGone := context.WithCancel(context.Background())
		leaderDone := make(chan error, 1)
		go func() { _, err := Connect(leaderCtx, w, 5432, dial); leaderDone <- err }()
		synctest.Wait() // the leader failed once and waits out its backoff
		first := w.current()
		if first == nil {
			t.Fatal("no wake led after a failed dial")
		}

		followerDone := make(chan error, 1)
		before := dials.Load()
		go func() { _, err := Connect(context.Background(), w, 5432, dial); followerDone <- err }()
		synctest.Wait()
		if n := dials.Load(); n != before {
			t.Fatalf("the follower dialled %d times instead of waiting for the wake", n-before)
		}

		leaderGone()
		if err := <-leaderDone; err == nil {
			t.Fatal("cancelled leader succeeded")
		}
		synctest.Wait() // the follower saw the wake fail, dialled, and leads
		if op := w.current(); op == nil || op == first {
			t.Fatalf("no new wake after the leader left (current %p, first %p)", op, first)
		}
		if n := dials.Load(); n != before+1 {
			t.Errorf("the follower dialled %d times on taking over, want once", n-before)
		}

		awake.Store(true)
		if err := <-followerDone; err != nil {
			t.Fatalf("follower: %v", err)
		}
		if st, _ := w.State(); st != StateRunning {
			t.Errorf("state %v after the follower's wake", st)
		}
	})
}
