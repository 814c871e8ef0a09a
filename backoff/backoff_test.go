package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for _, tt := range []struct {
		attempt int
		want    time.Duration
	}{{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {4, 1600 * time.Millisecond}, {5, 2 * time.Second}, {60, 2 * time.Second}} {
		if got := p.Delay(tt.attempt); got != tt.want {
			t.Errorf("Delay(%d) = %v, want %v", tt.attempt, got, tt.want)
		}
	}
	if d := (Policy{Min: time.Second, Max: time.Second}).Delay(0); d != time.Second {
		t.Errorf("Min = Max: %v", d)
	}
}

// TestJitter: jitter only shortens a delay, by at most its fraction, and
// spreads the retries of callers that failed together.
func TestJitter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		d := Wake.Delay(3)
		if d > 800*time.Millisecond || d < 560*time.Millisecond {
			t.Fatalf("Delay(3) = %v, want within 30%% under 800ms", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Errorf("200 delays took only %d values", len(seen))
	}
}
