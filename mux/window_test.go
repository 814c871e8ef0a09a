package mux

import (
	"testing"
	"time"
)

// link plays a window-limited sender through a link of rate bytes per
// second and round trip rtt, with a queue in front of it: each round, one
// window goes out; a window larger than the link's bandwidth-delay product
// waits in the queue, which stretches the round.
func playLink(w *window, rate float64, rtt time.Duration, rounds int, now time.Time) (time.Time, []int) {
	bdp := rate * rtt.Seconds()
	var acked uint64
	var sizes []int
	for range rounds {
		round := rtt
		if float64(w.size) > bdp {
			round = time.Duration(float64(w.size) / rate * float64(time.Second))
		}
		end := acked + uint64(w.size)
		w.sent(end, acked, now)
		now = now.Add(round)
		acked = end
		w.acked(acked, now)
		sizes = append(sizes, w.size)
	}
	return now, sizes
}

func TestWindowGrowsToTheLink(t *testing.T) {
	for _, tt := range []struct {
		name string
		rate float64 // bytes per second
		rtt  time.Duration
		max  int
	}{
		{"100 Mbit/s at 100 ms", 100e6 / 8, 100 * time.Millisecond, DefaultBuffer},
		{"1 Gbit/s at 100 ms", 1e9 / 8, 100 * time.Millisecond, DefaultBuffer},
		{"1 Gbit/s at 300 ms", 1e9 / 8, 300 * time.Millisecond, DefaultBuffer},
		{"20 Mbit/s at 50 ms", 20e6 / 8, 50 * time.Millisecond, DefaultBuffer},
		{"capped by Buffer", 1e9 / 8, 300 * time.Millisecond, 8 << 20},
		{"loopback", 2e9 / 8, 200 * time.Microsecond, DefaultBuffer},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindow(NewBudget(DefaultBudget), tt.max)
			if w.size != StartWindow {
				t.Fatalf("starts at %d, want %d", w.size, StartWindow)
			}
			_, sizes := playLink(&w, tt.rate, tt.rtt, 30, time.Unix(0, 0))
			bdp := int(tt.rate * tt.rtt.Seconds())
			want := min(bdp, tt.max)
			// Growing, it at least doubles a round: from StartWindow, the
			// link is filled within log2(bdp/StartWindow)+1 rounds.
			rounds := 1
			for n := StartWindow; n < want; n *= 2 {
				rounds++
			}
			if got := sizes[min(rounds, len(sizes)-1)]; got < want {
				t.Errorf("after %d rounds the window is %d, want at least %d (bdp %d); sizes %v", rounds, got, want, bdp, sizes)
			}
			// It settles: no more than twice the link, plus what one round
			// of growth overshoots, and it stops growing. A link whose
			// product is below StartWindow is queued from the first round,
			// which hides its round trip: the window may quadruple once.
			last := sizes[len(sizes)-1]
			if limit := min(max(4*bdp, 4*StartWindow), tt.max); last > limit {
				t.Errorf("settled at %d, more than %d (bdp %d); sizes %v", last, limit, bdp, sizes)
			}
			if sizes[len(sizes)-5] != last {
				t.Errorf("still growing after %d rounds: %v", len(sizes), sizes)
			}
		})
	}
}

// A sender that is not window-limited (an interactive session) does not
// grow its window.
func TestWindowStaysSmallForATrickle(t *testing.T) {
	b := NewBudget(DefaultBudget)
	w := newWindow(b, DefaultBuffer)
	now := time.Unix(0, 0)
	var acked uint64
	for range 100 {
		end := acked + 2000
		w.sent(end, acked, now)
		now = now.Add(100 * time.Millisecond)
		acked = end
		w.acked(acked, now)
		w.idle()
	}
	if w.size != StartWindow || b.Used() != 0 {
		t.Fatalf("window %d, budget used %d; want %d and 0", w.size, b.Used(), StartWindow)
	}
}

// The budget bounds what all windows hold together: 10,000 streams that
// sent a little hold none of it, 8 bulk streams share it, and one that
// goes idle gives its share back for another to take, then grows back to
// its size at once when it has a burst to send.
func TestWindowBudget(t *testing.T) {
	const budget = 64 << 20
	b := NewBudget(budget)
	now := time.Unix(0, 0)
	idle := make([]window, 10000)
	for i := range idle {
		idle[i] = newWindow(b, DefaultBuffer)
		idle[i].sent(100, 0, now)
		idle[i].acked(100, now.Add(50*time.Millisecond))
		idle[i].idle()
	}
	if b.Used() != 0 {
		t.Fatalf("10,000 idle streams hold %d of the budget", b.Used())
	}
	bulk := make([]window, 8)
	for i := range bulk {
		bulk[i] = newWindow(b, DefaultBuffer)
	}
	// 1 Gbit/s at 300 ms each: each wants far more than an eighth.
	for range 20 {
		for i := range bulk {
			playLink(&bulk[i], 1e9/8, 300*time.Millisecond, 1, now)
		}
	}
	var held int
	for i, w := range bulk {
		if w.size <= StartWindow {
			t.Errorf("bulk stream %d did not grow: %d", i, w.size)
		}
		if w.size != w.start+w.reserved {
			t.Errorf("bulk stream %d: size %d is not start %d plus reserved %d", i, w.size, w.start, w.reserved)
		}
		held += w.reserved
	}
	if int64(held) != b.Used() || b.Used() > budget {
		t.Fatalf("the streams hold %d, the budget says %d used of %d", held, b.Used(), budget)
	}
	if b.Used() < budget-StartWindow {
		t.Fatalf("streams that want more left %d of the budget unused", budget-b.Used())
	}

	// One goes idle: its share is back, and a newcomer can take it.
	size := bulk[0].size
	bulk[0].idle()
	if bulk[0].size != StartWindow || b.Used() != int64(held-(size-StartWindow)) {
		t.Fatalf("idle: size %d, used %d", bulk[0].size, b.Used())
	}
	bulk[0].end()
	if b.Used() != int64(held-(size-StartWindow)) {
		t.Fatalf("an idle window's end gave back more: used %d", b.Used())
	}
	n := newWindow(b, DefaultBuffer)
	playLink(&n, 1e9/8, 300*time.Millisecond, 20, now)
	if n.size < size/2 {
		t.Errorf("a new stream grew to %d only, with %d given back", n.size, size-StartWindow)
	}
	n.end()

	// A stream back from an idle spell takes its old size in one round.
	w := newWindow(b, DefaultBuffer)
	_, sizes := playLink(&w, 100e6/8, 100*time.Millisecond, 10, now)
	grown := sizes[len(sizes)-1]
	w.idle()
	_, sizes = playLink(&w, 100e6/8, 100*time.Millisecond, 1, now)
	if sizes[0] < grown {
		t.Errorf("after an idle spell the window is %d after one round, want %d", sizes[0], grown)
	}
	w.end()
	for i := range bulk {
		bulk[i].end()
	}
	if b.Used() != 0 {
		t.Fatalf("every window ended, and %d of the budget is held", b.Used())
	}
}

// Without a budget the window is the whole buffer, as before windows grew.
func TestWindowWithoutBudget(t *testing.T) {
	w := newWindow(nil, 4<<20)
	playLink(&w, 1e9/8, 300*time.Millisecond, 10, time.Unix(0, 0))
	if w.size != 4<<20 {
		t.Fatalf("size %d", w.size)
	}
}
