package mux

import (
	"sync/atomic"
	"time"
)

// Window sizing. A stream may have at most its window of bytes sent and
// not yet acknowledged, which is also what it keeps for replay. It starts
// at StartWindow and grows, as TCP's receive-buffer autotuning does, to
// twice what the link delivered in its shortest round trip, more while
// that is still growing, up to the stream's Buffer. The growth beyond
// StartWindow comes out of a Budget that all of a process's streams
// share, and goes back to it when the stream has nothing in flight, so
// that idle streams hold nothing and a few bulk ones can grow.
const (
	StartWindow   = 256 << 10
	DefaultBudget = 256 << 20
)

// Budget is memory that many streams' windows share: what each has grown
// beyond StartWindow. The zero value has no room; a nil *Budget leaves
// each stream its whole Buffer, as before windows grew.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int) *Budget { return &Budget{limit: int64(limit)} }

// Used is how much of the budget the streams hold now.
func (b *Budget) Used() int64 { return b.used.Load() }

// take reserves up to n bytes, as much as is left, and returns how many.
func (b *Budget) take(n int) int {
	for {
		used := b.used.Load()
		g := min(int64(n), b.limit-used)
		if g <= 0 {
			return 0
		}
		if b.used.CompareAndSwap(used, used+g) {
			return int(g)
		}
	}
}

func (b *Budget) give(n int) { b.used.Add(-int64(n)) }

// window is one stream's send window: its size, what it holds of the
// budget, and the measurements that size it. Under the stream's mu.
type window struct {
	budget   *Budget
	size     int // bytes that may be unacknowledged at once
	start    int // the size that needs no budget
	max      int // the stream's Buffer
	reserved int // size - start, taken from budget
	hint     int // the size before the last idle spell: a burst after it grows back to it at once

	// One round trip is timed at a time: from sending the byte before
	// probe until its acknowledgement.
	probe   uint64
	probeAt time.Time
	roundAt uint64 // acknowledged offset when the timed round began

	// The shortest round trip so far. It does not expire: a window that
	// fills a queue in front of the link stretches every round it could
	// be measured again by, and a minimum taken from those would grow the
	// window to fill the queue further. After a move to a path with more
	// than twice the round trip the window can fall short of the new one.
	minRTT time.Duration
	space  int // the most the link delivered in one minRTT so far
}

func newWindow(b *Budget, buffer int) window {
	if b == nil {
		return window{size: buffer, start: buffer, max: buffer}
	}
	start := min(StartWindow, buffer)
	return window{budget: b, size: start, start: start, max: buffer}
}

// sent notes that the bytes up to end left at now, and times a round trip
// if none is being timed.
func (w *window) sent(end uint64, acked uint64, now time.Time) {
	if w.budget == nil || w.probe != 0 {
		return
	}
	w.probe, w.probeAt, w.roundAt = end, now, acked
}

// acked takes an acknowledgement of everything below a, at now: when it
// covers the timed byte, a round trip is over, and the window is sized
// from what it delivered.
func (w *window) acked(a uint64, now time.Time) {
	if w.budget == nil || w.probe == 0 || a < w.probe {
		return
	}
	rtt := max(now.Sub(w.probeAt), time.Microsecond)
	delivered := int(a - w.roundAt)
	w.probe = 0
	if w.minRTT == 0 || rtt < w.minRTT {
		w.minRTT = rtt
	}
	// A round stretched by a queue in front of the link delivered no more
	// per unit of time: count what the link delivers in its own round
	// trip.
	d := int(int64(delivered) * int64(w.minRTT) / int64(rtt))
	if w.hint > w.size {
		w.grow(w.hint)
		w.hint = 0
	}
	if d <= w.space {
		return
	}
	// Twice the delivery, as TCP sizes its receive buffer, and while the
	// delivery still grows, more by the same factor: at least double each
	// round while the window is what holds it back. The first round counts
	// as growth from nothing, and quadruples.
	want := 4 * d
	if w.space > 0 {
		want = 2*d + int(int64(2*d)*int64(min(d-w.space, w.space))/int64(w.space))
	}
	w.space = d
	w.grow(want)
}

// grow widens the window toward want, as far as max and the budget allow.
func (w *window) grow(want int) {
	want = min(want, w.max)
	if want <= w.size {
		return
	}
	g := w.budget.take(want - w.size)
	w.size += g
	w.reserved += g
}

// idle gives back what the window holds of the budget, when nothing is in
// flight; the next burst takes it again once a round trip shows it needs
// it.
func (w *window) idle() {
	if w.budget == nil || w.reserved == 0 {
		return
	}
	w.hint = w.size
	w.budget.give(w.reserved)
	w.size, w.reserved = w.start, 0
	w.probe = 0
}

// end gives back everything, for good.
func (w *window) end() {
	if w.budget == nil {
		return
	}
	w.budget.give(w.reserved)
	w.size, w.reserved, w.hint = w.start, 0, 0
}
