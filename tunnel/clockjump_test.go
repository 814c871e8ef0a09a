package tunnel

import (
	"testing"
	"time"
)

func TestClockJump(t *testing.T) {
	for _, tt := range []struct {
		name       string
		mono, wall time.Duration
		want       time.Duration
	}{
		{"awake", time.Second, time.Second, 0},
		{"NTP nudge", time.Second, 1500 * time.Millisecond, 0},
		{"clock set back", time.Second, -time.Hour, 0},
		{"slept a minute", time.Second, 61 * time.Second, time.Minute},
		{"slept overnight", time.Second, 9 * time.Hour, 9*time.Hour - time.Second},
	} {
		if got := ClockJump(tt.mono, tt.wall); got != tt.want {
			t.Errorf("%s: ClockJump(%v, %v) = %v, want %v", tt.name, tt.mono, tt.wall, got, tt.want)
		}
	}
}
