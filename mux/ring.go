package mux

import (
	"math/bits"
	"sync"
)

// ring holds a stream's sent, unacknowledged bytes in order: they start at
// head and may wrap around the end of store. Acks drop bytes from the
// front, new data goes in at the back, and nothing already held is moved,
// except into a larger store while the buffer grows toward its bound, or
// into a smaller one after the stream's window shrank.
//
// It was a slice that slid its bytes to the front whenever it reached the
// end of its store; with a bulk upload keeping it nearly full, that copied
// megabytes per 32 KiB chunk, ten percent of the daemon's CPU.
type ring struct {
	store   []byte // nil while empty and idle (see release)
	head, n int
}

func (r *ring) len() int { return r.n }

// push appends p. A full store is replaced by one large enough, up to
// bound; the caller has made sure that the bytes held and p fit in bound.
// It grows at most twofold, toward want (the window): a window that grows
// by steps of a few percent a round trip copies its bytes once in several
// steps, as the steps cross the sizes' eighths. A store half as large
// again as what want and the bytes held need is replaced by that size: a
// window that shrank gives its memory back while the stream stays busy, at
// the cost of one copy of what it holds.
func (r *ring) push(p []byte, want, bound int) {
	need := r.n + len(p)
	size := len(r.store)
	switch {
	case size < need:
		size = storeSize(max(need, min(want, 2*size)), bound)
	case 2*size >= 3*storeSize(max(need, want), bound):
		size = storeSize(max(need, want), bound)
	}
	if size != len(r.store) {
		ns := getStore(size)
		a, b := r.segments()
		copy(ns[copy(ns, a):], b)
		putStore(r.store)
		r.store, r.head = ns, 0
	}
	tail := (r.head + r.n) % len(r.store)
	k := copy(r.store[tail:], p)
	copy(r.store, p[k:])
	r.n += len(p)
}

// drop discards the first k held bytes.
func (r *ring) drop(k int) {
	r.n -= k
	if r.n == 0 {
		r.head = 0
		return
	}
	r.head = (r.head + k) % len(r.store)
}

// segments returns the held bytes, in order, as at most two slices of the
// store. They stay valid until the next push.
func (r *ring) segments() (a, b []byte) {
	if r.n == 0 {
		return nil, nil
	}
	end := r.head + r.n
	if end <= len(r.store) {
		return r.store[r.head:end], nil
	}
	return r.store[r.head:], r.store[:end-len(r.store)]
}

// release gives an empty ring's store back to its pool: an idle stream
// holds none, and a busy one gets one back without allocating.
func (r *ring) release() {
	if r.n == 0 && r.store != nil {
		putStore(r.store)
		r.store, r.head = nil, 0
	}
}

// Stores up to StartWindow come in power-of-two sizes from 4 KiB, each
// size with its pool: streams that go idle and busy again, by the
// thousand, take them back without allocating. Larger ones, a bulk
// stream's, are sized in eighths of a power of two (so at most an eighth
// more than the window needs, where the next power of two could be
// twice), and are left to the collector when a ring outgrows or releases
// them: a pool keeps what it holds until two collections have passed,
// which in a bulk transfer, allocating little else, is its whole life,
// and the sizes a window grew through are rarely asked for again. The
// largest store is the buffer's bound.
var stores sync.Map // int → *sync.Pool

func storeSize(need, bound int) int {
	n := 4 << 10
	for n < need && n < StartWindow {
		n *= 2
	}
	if n < need {
		step := 1 << (bits.Len(uint(need)) - 4) // an eighth of the power of two below need
		n = (need + step - 1) / step * step
	}
	return min(n, max(bound, need))
}

func getStore(n int) []byte {
	if n > StartWindow {
		return make([]byte, n)
	}
	if p, ok := stores.Load(n); ok {
		if b, ok := p.(*sync.Pool).Get().(*[]byte); ok {
			return (*b)[:n]
		}
	}
	return make([]byte, n)
}

func putStore(b []byte) {
	if b == nil || cap(b) > StartWindow {
		return
	}
	p, _ := stores.LoadOrStore(cap(b), &sync.Pool{})
	b = b[:cap(b)]
	p.(*sync.Pool).Put(&b)
}
