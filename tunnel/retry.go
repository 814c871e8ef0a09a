package tunnel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/spritefwd/spritefwd/sprites"
)

// Backoff is an exponential backoff with jitter.
type Backoff struct {
	Min, Max time.Duration
	Jitter   float64 // fraction of each delay that is randomised, 0 to 1
}

// DefaultBackoff retries quickly at first, because a warm sprite wakes in
// a few hundred milliseconds, and settles at 2 s for a cold one.
var DefaultBackoff = Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.3}

// Delay is the wait before retry number attempt (0-based).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Min
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if b.Jitter > 0 {
		d -= time.Duration(rand.Float64() * b.Jitter * float64(d))
	}
	return d
}

// Errors a connection attempt ends with, beyond the sprites package's own.
var (
	// ErrWakeTimeout: the sprite did not accept a link within wake_timeout.
	ErrWakeTimeout = errors.New("sprite did not wake in time")
	// ErrNothingListening: the sprite runs, but the port stayed closed.
	ErrNothingListening = errors.New("nothing listens on the port")
)

// SpriteState is what spritefwd last saw of a sprite. It is inferred from
// links, because asking the API would itself wake the sprite.
type SpriteState string

const (
	StateUnknown SpriteState = "unknown"
	StateWaking  SpriteState = "waking"
	StateRunning SpriteState = "running"
)

// Waker coordinates connection attempts to one sprite. While a sprite wakes,
// one attempt leads the retries and the others wait for its outcome, so that
// a burst of new connections costs one stream of API calls, not one each.
type Waker struct {
	Sprite       string
	Clock        Clock
	Backoff      Backoff
	RefusedTries int           // how often "nothing listens" is retried outside the grace
	RefusedGrace time.Duration // after a wake, "nothing listens" is retried this long
	// OnWake, if set, is called when a wake ends, with how long it took.
	OnWake func(waited time.Duration, err error)

	// dials bounds the handshakes in flight to this sprite, so a storm of
	// accepts cannot open unbounded WebSockets: the rest queue, within
	// their wake timeout.
	dials chan struct{}

	mu          sync.Mutex
	wakeTimeout time.Duration // a reload may change it while connections dial
	wake        *wakeOp
	state       SpriteState
	lastWake    time.Time
	wakes       int64
	wakeWait    time.Duration
}

// SetWakeTimeout changes the wake timeout for connections that start later.
func (w *Waker) SetWakeTimeout(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wakeTimeout = d
}

func (w *Waker) timeoutValue() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wakeTimeout
}

// Wakes reports how many wakes this sprite went through and their total wait.
func (w *Waker) Wakes() (int64, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wakes, w.wakeWait
}

type wakeOp struct {
	done  chan struct{}
	err   error
	start time.Time
}

// MaxDialsPerSprite bounds concurrent proxy handshakes to one sprite.
const MaxDialsPerSprite = 64

// NewWaker returns a Waker with the default policy.
func NewWaker(sprite string, clock Clock, wakeTimeout time.Duration) *Waker {
	return &Waker{
		Sprite: sprite, Clock: clock, Backoff: DefaultBackoff, wakeTimeout: wakeTimeout,
		RefusedTries: 3, RefusedGrace: 10 * time.Second, state: StateUnknown,
		dials: make(chan struct{}, MaxDialsPerSprite),
	}
}

// dial runs one attempt inside the per-sprite bound.
func dialBounded[T any](ctx context.Context, w *Waker, dial func(context.Context) (T, error)) (T, error) {
	if w.dials != nil {
		select {
		case w.dials <- struct{}{}:
			defer func() { <-w.dials }()
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
	return dial(ctx)
}

// State reports the sprite's last known state and when it last woke.
func (w *Waker) State() (SpriteState, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.lastWake
}

// MarkIdle records that no link is open, so the sprite may be asleep.
func (w *Waker) MarkIdle() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wake == nil {
		w.state = StateUnknown
	}
}

func (w *Waker) lead() (*wakeOp, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wake != nil {
		return w.wake, false
	}
	w.wake = &wakeOp{done: make(chan struct{}), start: w.Clock.Now()}
	w.state = StateWaking
	return w.wake, true
}

func (w *Waker) current() *wakeOp {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wake
}

func (w *Waker) finish(op *wakeOp, err error) {
	w.mu.Lock()
	now := w.Clock.Now()
	op.err = err
	w.wake = nil
	if err == nil {
		w.state = StateRunning
		w.lastWake = now
		w.wakes++
		w.wakeWait += now.Sub(op.start)
	} else {
		w.state = StateUnknown
	}
	close(op.done)
	onWake := w.OnWake
	w.mu.Unlock()
	if onWake != nil {
		onWake(now.Sub(op.start), err)
	}
}

func (w *Waker) connected() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wake == nil {
		w.state = StateRunning
	}
}

func (w *Waker) wokeRecently() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.lastWake.IsZero() && w.Clock.Now().Sub(w.lastWake) < w.RefusedGrace
}

// Connect calls dial until it succeeds, retrying while the failure is
// retryable (the sprite is waking, the network flapped) for up to
// WakeTimeout. It fails at once on a permanent error, and retries "nothing
// listens" only a few times or shortly after a wake.
func Connect[T any](ctx context.Context, w *Waker, port int, dial func(context.Context) (T, error)) (T, error) {
	var zero T
	wakeTimeout := w.timeoutValue()
	ctx, cancel := context.WithTimeout(ctx, wakeTimeout)
	defer cancel()
	deadline := w.Clock.Now().Add(wakeTimeout)
	var (
		op       *wakeOp
		leading  bool
		refused  int
		attempt  int
		lastErr  error
		giveUpOp = func(err error) {
			if leading {
				w.finish(op, err)
				leading = false
			}
		}
	)
	for {
		if !leading {
			if o := w.current(); o != nil {
				select {
				case <-o.done:
				case <-ctx.Done():
					return zero, w.timeout(wakeTimeout, lastErr)
				}
				if sprites.IsPermanent(o.err) {
					return zero, o.err
				}
			}
		}
		v, err := dialBounded(ctx, w, dial)
		if err == nil {
			giveUpOp(nil)
			w.connected()
			return v, nil
		}
		if ctx.Err() != nil {
			err = w.timeout(wakeTimeout, err)
			giveUpOp(err)
			return zero, err
		}
		lastErr = err
		switch sprites.ClassOf(err) {
		case sprites.Permanent:
			giveUpOp(err)
			return zero, err
		case sprites.Refused:
			// The sprite answered, so it is awake: end the wake, which starts
			// the grace in which a server that is still starting is waited for.
			if leading {
				w.finish(op, nil)
				leading = false
			}
			refused++
			if refused > w.RefusedTries && !w.wokeRecently() {
				err = fmt.Errorf("%w: sprite %s port %d (%d tries): %w", ErrNothingListening, w.Sprite, port, refused, err)
				giveUpOp(err)
				return zero, err
			}
		default:
			if !leading {
				if op, leading = w.lead(); !leading {
					continue // another connection leads this wake: wait for it
				}
			}
		}
		delay := w.Backoff.Delay(attempt)
		attempt++
		if left := deadline.Sub(w.Clock.Now()); delay > left {
			if left <= 0 {
				err = w.timeout(wakeTimeout, lastErr)
				giveUpOp(err)
				return zero, err
			}
			delay = left
		}
		select {
		case <-w.Clock.After(delay):
		case <-ctx.Done():
			err = w.timeout(wakeTimeout, lastErr)
			giveUpOp(err)
			return zero, err
		}
	}
}

func (w *Waker) timeout(limit time.Duration, last error) error {
	if last == nil {
		return fmt.Errorf("sprite %s: %w within %s", w.Sprite, ErrWakeTimeout, limit)
	}
	return fmt.Errorf("sprite %s: %w within %s; last error: %w", w.Sprite, ErrWakeTimeout, limit, last)
}
