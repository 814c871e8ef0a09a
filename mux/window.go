package mux

import (
	"sync/atomic"
	"time"
)

// Window sizing. A stream may have at most its window of bytes sent and
// not yet acknowledged, which is also what it keeps for replay. It starts
// at StartWindow and, while it holds the stream back, doubles each round
// trip as TCP's slow start does, until a round shows the link holds no
// more. From then on it is, as TCP's receive-buffer autotuning sizes its
// buffer, twice what the link delivered in its shortest round trip, more
// while that is still growing, up to the stream's Buffer. What it
// delivered is the most of its last deliveryRounds rounds, not of all
// time: a stream whose share of the link falls (others started on it)
// shrinks to twice its share, and gives the difference back as its bytes
// in flight are acknowledged. The growth beyond StartWindow comes out of
// a Budget that all of a process's streams share, and all of it goes back
// when the stream has nothing in flight, so that idle streams hold
// nothing and a few bulk ones can grow.
const (
	StartWindow   = 256 << 10
	DefaultBudget = 256 << 20
)

// Budget is memory that many streams' windows share: what each has grown
// beyond StartWindow. The zero value has no room; a nil *Budget leaves
// each stream its whole Buffer, as before windows grew.
type Budget struct {
	limit atomic.Int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int) *Budget {
	b := &Budget{}
	b.limit.Store(int64(limit))
	return b
}

// SetLimit changes the limit. Below what the streams hold now, nothing is
// taken from them: they stop growing, and what they give back as their
// windows shrink or go idle is not taken again until they are under it.
func (b *Budget) SetLimit(limit int) { b.limit.Store(int64(limit)) }

// Limit is the budget's size.
func (b *Budget) Limit() int64 { return b.limit.Load() }

// Used is how much of the budget the streams hold now.
func (b *Budget) Used() int64 { return b.used.Load() }

// take reserves up to n bytes, as much as is left, and returns how many.
func (b *Budget) take(n int) int {
	for {
		used := b.used.Load()
		g := min(int64(n), b.limit.Load()-used)
		if g <= 0 {
			return 0
		}
		if b.used.CompareAndSwap(used, used+g) {
			return int(g)
		}
	}
}

func (b *Budget) give(n int) { b.used.Add(-int64(n)) }

// Path is what the streams on one link know of it together: its shortest
// round trip. A stream that starts on a link others already keep busy
// never sees the link's own round trip, only one stretched by their queue,
// and sized from that it would grow the queue and stretch the next
// newcomer's further; from the shortest any stream saw, its delivery per
// round trip is its share of the link. The zero value knows nothing.
type Path struct {
	minRTT atomic.Int64 // nanoseconds; 0 until measured
	span   atomic.Int64 // the most one stream delivered in one minRTT
}

// spanned takes what a stream delivered in one minRTT and returns the most
// any did.
func (p *Path) spanned(d int) int {
	for {
		m := p.span.Load()
		if m >= int64(d) || p.span.CompareAndSwap(m, int64(d)) {
			return int(max(m, int64(d)))
		}
	}
}

// observe takes a round trip measured on the path and returns the shortest
// so far.
func (p *Path) observe(rtt time.Duration) time.Duration {
	for {
		m := p.minRTT.Load()
		if m != 0 && m <= int64(rtt) {
			return time.Duration(m)
		}
		if p.minRTT.CompareAndSwap(m, int64(rtt)) {
			return rtt
		}
	}
}

// reset replaces the shortest round trip with rtt: the one known is stale.
func (p *Path) reset(rtt time.Duration) time.Duration {
	p.minRTT.Store(int64(rtt))
	return rtt
}

// deliveryRounds is how many of its latest rounds a window remembers the
// delivery of: enough that a round or two that delivered less (a pause in
// what the client sends, a peer slow to read) does not shrink it, few
// enough that a share lost to other streams is given back within seconds.
const deliveryRounds = 10

// A window the link holds at its share grows each round by a step that is
// the same for every stream on the link, so that their shares even out:
// a part of the most one stream on it delivered in a round, at least
// minStep.
const (
	minStep   = 64 << 10
	stepParts = 16
)

// window is one stream's send window: its size, what it holds of the
// budget, and the measurements that size it. Under the stream's mu.
type window struct {
	budget   *Budget
	size     int // bytes that may be unacknowledged at once
	start    int // the size that needs no budget
	max      int // the stream's Buffer
	reserved int // taken from budget: max(size, bytes in flight) - start, at most
	hint     int // the size before the last idle spell: a burst after it grows back to it at once

	// One round trip is timed at a time: from sending the byte before
	// probe until its acknowledgement.
	probe   uint64
	probeAt time.Time
	roundAt uint64        // acknowledged offset when the timed round began
	full    bool          // the window was full at some send in the timed round
	sentEnd uint64        // the end of what was sent
	eased   uint64        // sentEnd when the window last shrank for a long queue
	easedAt time.Duration // the round trip that made it shrink; 0 once a round showed the queue short
	strikes int           // shrinks in a row after which the round trip stayed as long

	// Start-up, as TCP's slow start: until a round shows the delivery has
	// stopped growing, every acknowledgement of n bytes while the window
	// holds the stream back widens it by n, so that it doubles each round
	// trip as the acknowledgements come in, not a round late.
	startup bool
	blocked bool   // the window was full at the latest send
	ackedTo uint64 // acknowledged so far

	// The shortest round trip: the path's, shared with the other streams
	// on the link, or the stream's own without one. It does not expire: a
	// window that fills a queue in front of the link stretches every round
	// it could be measured again by, and a minimum taken from those would
	// grow the window to fill the queue further. After a move to a path
	// with more than twice the round trip the window can fall short of the
	// new one.
	path   *Path
	minRTT time.Duration
	span   int // without a path: the most the stream delivered in one minRTT

	// What the link delivered in one minRTT, in each of the latest rounds
	// (a ring, next the index of the oldest).
	delivered [deliveryRounds]int
	next      int
}

func newWindow(b *Budget, buffer int) window {
	if b == nil {
		return window{size: buffer, start: buffer, max: buffer}
	}
	start := min(StartWindow, buffer)
	return window{budget: b, size: start, start: start, max: buffer, startup: true}
}

// on moves the window's measurements to path p, a new link: what the old
// one delivered says little about it, but the window keeps its size until
// the new link's rounds show otherwise.
func (w *window) on(p *Path) {
	if w.path == p {
		return
	}
	w.path, w.minRTT, w.span, w.probe = p, 0, 0, 0
}

// sent notes that the bytes up to end left at now, and times a round trip
// if none is being timed.
func (w *window) sent(end uint64, acked uint64, now time.Time) {
	if w.budget == nil {
		return
	}
	w.sentEnd = end
	w.blocked = int(end-acked)+maxChunk > w.size
	if w.blocked {
		w.full = true
	}
	if w.probe != 0 {
		return
	}
	w.probe, w.probeAt, w.roundAt = end, now, acked
}

// reach is the most the window may be by the end of this round trip:
// twice its size in start-up, which doubles it as the acknowledgements
// come in. A replay buffer sized for that grows once a round, not at
// each of the many small steps start-up takes.
func (w *window) reach() int {
	if w.budget != nil && w.startup {
		return min(2*w.size, w.max)
	}
	return w.size
}

// space is the most the link delivered in one round trip in the latest
// rounds.
func (w *window) space() int {
	m := 0
	for _, d := range w.delivered {
		m = max(m, d)
	}
	return m
}

// acked takes an acknowledgement of everything below a, which leaves
// inflight bytes unacknowledged, at now: when it covers the timed byte, a
// round trip is over, and the window is sized from what it delivered.
func (w *window) acked(a uint64, inflight int, now time.Time) {
	if w.budget == nil {
		return
	}
	defer w.settle(inflight)
	if a > w.ackedTo {
		if w.startup && w.blocked {
			w.grow(w.size + int(a-w.ackedTo))
		}
		w.ackedTo = a
	}
	if w.probe == 0 || a < w.probe {
		return
	}
	rtt := max(now.Sub(w.probeAt), time.Microsecond)
	delivered := int(a - w.roundAt)
	full := w.full
	w.probe, w.full = 0, false
	if w.path != nil {
		w.minRTT = w.path.observe(rtt)
	} else if w.minRTT == 0 || rtt < w.minRTT {
		w.minRTT = rtt
	}
	// A round stretched by a queue in front of the link delivered no more
	// per unit of time: count what the link delivers in its own round
	// trip.
	d := int(int64(delivered) * int64(w.minRTT) / int64(rtt))
	space := w.space()
	if w.path != nil {
		w.span = w.path.spanned(d)
	} else {
		w.span = max(w.span, d)
	}
	w.delivered[w.next] = d
	w.next = (w.next + 1) % deliveryRounds
	if w.hint > w.size {
		w.grow(w.hint)
		w.hint = 0
	}
	if 2*rtt <= 5*w.minRTT {
		w.strikes, w.easedAt = 0, 0 // the queue is short again
	}
	switch recent := w.space(); {
	case 2*rtt > 5*w.minRTT && w.roundAt >= w.eased:
		// The queue in front of the link holds more than one and a half
		// of its round trips: windows together are well past twice what
		// the link holds, and only lengthen the queue and hold memory.
		// Every stream on the link sees the same queue, and each shrinks
		// to twice what it delivers, which is its share: together, to
		// twice the link. Once a round: the next that counts is one
		// sent after what was in flight now is acknowledged.
		//
		// Unless shrinking does not shorten it: then the queue is not
		// ours (the path's own round trip grew, or other traffic fills
		// a queue on it), and shrinking further would only starve the
		// stream. After two shrinks in a row that left the round trip
		// as long, it is taken for the path's.
		if w.easedAt != 0 && 5*rtt > 4*w.easedAt {
			w.strikes++
		} else {
			w.strikes = 0
		}
		if w.strikes >= 2 {
			if w.path != nil {
				w.minRTT = w.path.reset(rtt)
			} else {
				w.minRTT = rtt
			}
			w.strikes, w.easedAt = 0, 0
			return
		}
		w.size = max(min(w.size, 2*d), w.start)
		w.eased, w.easedAt = w.sentEnd, rtt
		w.startup = false
		return
	case w.startup:
		// Start-up doubles the window as acknowledgements come in (above)
		// until a round shows the link holds no more: its round trip
		// stretched by a queue of a quarter of it, or its delivery grown
		// by less than a quarter in a round the window held back. After
		// it, the window is sized from the delivery, as below.
		if 4*rtt > 5*w.minRTT || full && 4*d < 5*space {
			w.startup = false
		}
	case d > space:
		// Twice the delivery, as TCP sizes its receive buffer, and while
		// the delivery still grows, more by the same factor: at least
		// double each round while the window is what holds it back. A
		// round after none that delivered counts as growth from nothing,
		// and quadruples.
		want := 4 * d
		if space > 0 {
			want = 2*d + int(int64(2*d)*int64(min(d-space, space))/int64(space))
		}
		w.grow(want)
	case !full && w.size > 2*recent+recent/2:
		// Well above twice what it delivered lately, and never full: the
		// stream sends less than it did. Down to twice. (A full window's
		// delivery shows its size a round late, and a queue too long
		// shrinks it above.)
		w.size = max(2*recent, w.start)
	case full:
		// A stream the window holds back, on a link that others keep
		// busy, sees its delivery stay put as it grows (its share of
		// a queue they fill): it grows by a step each round, and every
		// window shrinks in proportion when the queue grows too long,
		// so that shares even out, as TCP's do.
		w.grow(w.size + max(minStep, w.span/stepParts))
	}
}

// grow widens the window toward want, as far as max and the budget allow.
// What it still holds for bytes in flight beyond a smaller size counts.
func (w *window) grow(want int) {
	want = min(want, w.max)
	if want <= w.size {
		return
	}
	if held := w.start + w.reserved; want > held {
		w.reserved += w.budget.take(want - held)
	}
	w.size = min(want, w.start+w.reserved)
}

// settle gives back what the window holds beyond its size and the bytes
// in flight: those are kept for replay until acknowledged, whatever the
// size.
func (w *window) settle(inflight int) {
	if keep := max(w.size, inflight, w.start) - w.start; w.reserved > keep {
		w.budget.give(w.reserved - keep)
		w.reserved = keep
	}
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
	w.startup = true
}

// end gives back everything, for good.
func (w *window) end() {
	if w.budget == nil {
		return
	}
	w.budget.give(w.reserved)
	w.size, w.reserved, w.hint = w.start, 0, 0
}
