// Package backoff computes how long to wait before retrying: exponential
// delays with jitter, so that many callers that failed together (every
// connection to a sprite that fell asleep) do not retry together. Every
// retry loop in spritefwd takes its delays from here.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy doubles the delay from Min up to Max. Jitter is the fraction of
// each delay, 0 to 1, taken off at random.
type Policy struct {
	Min, Max time.Duration
	Jitter   float64
}

// Wake retries quickly at first, because a warm sprite wakes in a few
// hundred milliseconds, and settles at 2 s for a cold one.
var Wake = Policy{Min: 100 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.3}

// Delay is the wait before retry number attempt (0-based).
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Min
	for i := 0; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	if p.Jitter > 0 {
		d -= time.Duration(rand.Float64() * p.Jitter * float64(d))
	}
	return d
}
