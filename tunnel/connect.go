package tunnel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spritefwd/spritefwd/sprites"
)

// Errors a connection attempt ends with, beyond the sprites package's own.
var (
	// ErrWakeTimeout: the sprite did not accept a link within wake_timeout.
	ErrWakeTimeout = errors.New("sprite did not wake in time")
	// ErrNothingListening: the sprite runs, but the port stayed closed.
	ErrNothingListening = errors.New("nothing listens on the port")
)

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
