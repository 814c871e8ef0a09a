package tunnel

import (
	"context"
	"sync"
	"time"

	"github.com/spritefwd/spritefwd/backoff"
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
	Backoff      backoff.Policy
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
		Sprite: sprite, Clock: clock, Backoff: backoff.Wake, wakeTimeout: wakeTimeout,
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
