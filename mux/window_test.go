package mux

import (
	"fmt"
	"math/bits"
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
		w.acked(acked, 0, now)
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
			// It settles between the link and two and a half times it (a
			// longer queue shrinks it, and it grows by a step a round up to
			// there), never again below the link. A link whose product is
			// below StartWindow is queued from the first round, which hides
			// its round trip: the window may quadruple once.
			limit := min(max(5*bdp/2+max(minStep, bdp/stepParts), 4*StartWindow), tt.max)
			for i, size := range sizes[len(sizes)-20:] {
				if size > limit || size < want {
					t.Errorf("round %d: %d, outside [%d, %d] (bdp %d); sizes %v", len(sizes)-20+i, size, want, limit, bdp, sizes)
					break
				}
			}
		})
	}
}

// One stream alone on a link starts as TCP's slow start does: its window
// doubles each round trip from StartWindow until it holds what the link
// does. Sized from a round's delivery alone it would lag a round, since
// what a round delivers is acknowledged a round trip after it was sent:
// at 300 ms and 100 Mbit/s it went 256 KiB, 256 KiB, 1 MiB, 1.06 MiB,
// 4 MiB in the first five round trips.
func TestWindowDoublesEachRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name string
		rate float64 // bytes per second
		rtt  time.Duration
	}{
		{"100 Mbit/s at 300 ms", 100e6 / 8, 300 * time.Millisecond},
		{"1 Gbit/s at 300 ms", 1e9 / 8, 300 * time.Millisecond},
		{"100 Mbit/s at 100 ms", 100e6 / 8, 100 * time.Millisecond},
		{"1 Gbit/s at 100 ms", 1e9 / 8, 100 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := newSimLink(tt.rate, tt.rtt)
			s := l.add(NewBudget(DefaultBudget), l.now, -1)
			bdp := int(tt.rate * tt.rtt.Seconds())
			t0 := l.now
			var sizes []int
			// By the end of round k, the acknowledgements of the window
			// sent in round k-1 are all in: it holds twice that.
			for k, want := 0, StartWindow; ; k, want = k+1, 2*want {
				l.run(t0.Add(time.Duration(k+1) * tt.rtt))
				sizes = append(sizes, s.w.size>>10)
				if s.w.size < min(want, bdp) {
					t.Fatalf("round %d: window %d KiB, want %d KiB (the link holds %d KiB); KiB by round: %v", k, s.w.size>>10, min(want, bdp)>>10, bdp>>10, sizes)
				}
				if want >= bdp {
					t.Logf("the link's %d KiB in %d round trips; KiB by round: %v", bdp>>10, k, sizes)
					break
				}
			}
		})
	}
}

// A replay buffer follows its window through start-up, which doubles it
// in steps of an acknowledgement: its store is replaced about once a
// round trip, not at each eighth of its size the steps cross (each
// replacement allocates and copies what it holds), and it is never much
// larger than the window was.
func TestWindowStartupGrowsItsBufferOnceARound(t *testing.T) {
	for _, tt := range []struct {
		name string
		rate float64 // bytes per second
		rtt  time.Duration
	}{
		{"100 Mbit/s at 300 ms", 100e6 / 8, 300 * time.Millisecond},
		{"1 Gbit/s at 300 ms", 1e9 / 8, 300 * time.Millisecond},
		{"1 Gbit/s at 100 ms", 1e9 / 8, 100 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := newSimLink(tt.rate, tt.rtt)
			n := uint64(4 * tt.rate)
			s := l.add(NewBudget(DefaultBudget), l.now, int64(n))
			// The stream's buffer, as Stream keeps it: pushed as the
			// window lets bytes go, dropped as they are acknowledged.
			var r ring
			var pushed, dropped uint64
			chunk := make([]byte, maxChunk)
			stores, allocated, peakStore, peakWindow := 0, 0, 0, 0
			for s.acked < n {
				l.run(l.now.Add(time.Millisecond))
				r.drop(int(s.acked - dropped))
				dropped = s.acked
				for ; pushed < s.next; pushed += maxChunk {
					was := len(r.store)
					r.push(chunk[:min(maxChunk, s.next-pushed)], s.w.reach(), DefaultBuffer)
					if len(r.store) != was {
						stores++
						allocated += len(r.store)
					}
					peakStore, peakWindow = max(peakStore, len(r.store)), max(peakWindow, s.w.size)
				}
			}
			doublings := bits.Len(uint(peakWindow / StartWindow))
			t.Logf("%d stores, %d MiB allocated for %d MiB sent; store at most %d KiB, window %d KiB", stores, allocated>>20, n>>20, peakStore>>10, peakWindow>>10)
			if stores > 3*doublings+4 {
				t.Errorf("%d stores for a window that doubled %d times", stores, doublings)
			}
			if peakStore > peakWindow+peakWindow/4 {
				t.Errorf("a store of %d KiB for a window of at most %d KiB", peakStore>>10, peakWindow>>10)
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
		w.acked(acked, 0, now)
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
		idle[i].acked(100, 0, now.Add(50*time.Millisecond))
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

// Streams that share one link settle, together, near twice what the link
// holds, not at what the budget allows, keep it full, and even out their
// shares, however their starts are spread: one that starts on a link the
// others already keep busy sees only their queue's round trip, and sizing
// its window from that would grow the queue for the next one.
func TestWindowsShareALink(t *testing.T) {
	const (
		rate = 1e9 / 8 // bytes per second
		rtt  = 100 * time.Millisecond
		n    = 8
	)
	bdp := int(rate * rtt.Seconds())
	for _, tt := range []struct {
		name    string
		stagger time.Duration // between one stream's start and the next
	}{
		{"all at once", 0},
		{"50 ms apart", 50 * time.Millisecond},
		{"300 ms apart", 300 * time.Millisecond},
		{"2 s apart", 2 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBudget(DefaultBudget)
			l := newSimLink(rate, rtt)
			t0 := l.now
			for i := range n {
				l.add(b, t0.Add(time.Duration(i)*tt.stagger), -1)
			}
			settled := t0.Add(time.Duration(n-1)*tt.stagger + 20*time.Second)
			l.run(settled)
			from := make([]uint64, n)
			for i, s := range l.streams {
				from[i] = s.acked
			}
			// Sampled for 10 s more, each 50 ms.
			peak := 0
			for range 200 {
				l.run(l.now.Add(50 * time.Millisecond))
				total, held := l.sizes()
				peak = max(peak, total)
				if int64(held-n*StartWindow) != b.Used() {
					t.Fatalf("the windows hold %d beyond their starts, the budget says %d", held-n*StartWindow, b.Used())
				}
			}
			// Two and a half times the link, where a queue that long shrinks
			// them, with room for a round's growth and the start windows.
			if limit := 3*bdp + n*StartWindow; peak > limit || int(b.Used()) > limit {
				t.Errorf("the windows reached %d together, budget used %d: more than %d (the link holds %d)", peak, b.Used(), limit, bdp)
			}
			var sum uint64
			for i, s := range l.streams {
				got := s.acked - from[i]
				sum += got
				// No stream is starved: at least a third of an even share.
				if even := rate * 10 / n; float64(got) < even/3 {
					t.Errorf("stream %d delivered %d in 10 s, an even share is %.0f", i, got, even)
				}
			}
			if frac := float64(sum) / (rate * 10); frac < 0.95 {
				t.Errorf("the link carried %.2f of its rate", frac)
			}
		})
	}
}

// A stream that had a link to itself and then shares it with others shrinks
// to its share while it is still busy, and gives back to the budget what it
// no longer holds in flight, without ever dropping to nothing in flight.
func TestWindowGivesBackAsItsShareFalls(t *testing.T) {
	const rate, rtt = 1e9 / 8, 100 * time.Millisecond
	bdp := int(rate * rtt.Seconds())
	b := NewBudget(DefaultBudget)
	l := newSimLink(rate, rtt)
	first := l.add(b, l.now, -1)
	l.run(l.now.Add(3 * time.Second))
	alone := first.w.size
	if alone < bdp {
		t.Fatalf("alone on the link the window is %d, less than the link's %d", alone, bdp)
	}
	for range 7 {
		l.add(b, l.now, -1)
	}
	l.run(l.now.Add(20 * time.Second))
	if first.idles != 0 {
		t.Fatalf("the first stream ran out of bytes in flight %d times", first.idles)
	}
	if first.w.size > alone/2 || first.w.reserved > alone/2 {
		t.Errorf("sharing with 7 others the window is %d and holds %d of the budget, was %d alone", first.w.size, first.w.reserved, alone)
	}
	if first.w.reserved+first.w.start < first.inflight() {
		t.Errorf("holds %d of the budget beyond %d, with %d in flight", first.w.reserved, first.w.start, first.inflight())
	}
}

// A limit lowered below what the streams hold takes nothing from them:
// none grows until enough is given back to be under it.
func TestBudgetSetLimit(t *testing.T) {
	b := NewBudget(8 << 20)
	if got := b.take(6 << 20); got != 6<<20 {
		t.Fatalf("took %d of 8 MiB", got)
	}
	b.SetLimit(4 << 20)
	if got := b.take(1); got != 0 || b.Used() != 6<<20 {
		t.Fatalf("over the new limit, took %d; used %d", got, b.Used())
	}
	b.give(3 << 20)
	if got := b.take(2 << 20); got != 1<<20 || b.Used() != 4<<20 {
		t.Fatalf("under the new limit by 1 MiB, took %d; used %d", got, b.Used())
	}
	if b.Limit() != 4<<20 {
		t.Fatalf("limit %d", b.Limit())
	}
}

// A session whose path's round trip grows (a new route, or a queue that
// other traffic keeps full) is not starved: its windows shrink for what
// looks like their own queue at most twice, then take the longer round
// trip for the path's, and fill the link again.
func TestWindowFollowsALongerPath(t *testing.T) {
	for _, rate := range []float64{100e6 / 8, 1e9 / 8} {
		t.Run(fmt.Sprintf("%.0f Mbit/s", rate*8/1e6), func(t *testing.T) {
			l := newSimLink(rate, 100*time.Millisecond)
			s := l.add(NewBudget(DefaultBudget), l.now, -1)
			l.run(l.now.Add(5 * time.Second))
			l.rtt = 300 * time.Millisecond
			l.run(l.now.Add(15 * time.Second))
			from := s.acked
			l.run(l.now.Add(10 * time.Second))
			if frac := float64(s.acked-from) / (rate * 10); frac < 0.9 {
				t.Errorf("at 300 ms after 100 ms, the stream carried %.2f of the link; window %d, link %.0f", frac, s.w.size, rate*0.3)
			}
		})
	}
}
