package mux

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestRingAgainstSlice pushes and drops at random, wrapping, growing and
// shrinking (under a window that changes at random), and compares the ring
// with a plain slice after every step.
func TestRingAgainstSlice(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		const bound = 64 << 10
		var r ring
		var want []byte
		next := byte(0)
		for step := range 2000 {
			if rng.IntN(2) == 0 {
				p := make([]byte, rng.IntN(bound-len(want)+1))
				for i := range p {
					p[i] = next
					next++
				}
				r.push(p, rng.IntN(bound+1), bound)
				want = append(want, p...)
			} else {
				k := rng.IntN(len(want) + 1)
				r.drop(k)
				want = want[k:]
			}
			a, b := r.segments()
			if got := append(append([]byte(nil), a...), b...); !bytes.Equal(got, want) || r.len() != len(want) {
				t.Fatalf("seed %d step %d: ring holds %d bytes (len %d), want %d, or they differ", seed, step, len(got), r.len(), len(want))
			}
			if len(r.store) > bound {
				t.Fatalf("seed %d step %d: store of %d bytes, past the %d bound", seed, step, len(r.store), bound)
			}
			if rng.IntN(50) == 0 {
				r.drop(r.len())
				want = want[:0]
				r.release()
				if r.store != nil {
					t.Fatalf("seed %d: an empty ring kept its store after release", seed)
				}
			}
		}
	}
}

// A ring at its bound takes new bytes without moving what it holds: the
// bytes still held stay where they were.
func TestRingDoesNotMoveHeldBytes(t *testing.T) {
	const bound = 16 << 10
	var r ring
	r.push(bytes.Repeat([]byte{1}, bound), bound, bound)
	store := &r.store[0]
	r.drop(bound - 100)
	r.push(bytes.Repeat([]byte{2}, bound-100), bound, bound)
	if &r.store[0] != store {
		t.Fatal("the ring replaced its store although the bytes fit")
	}
	a, b := r.segments()
	if len(a) != 100 || len(b) != bound-100 || a[0] != 1 || b[0] != 2 {
		t.Fatalf("segments %d and %d bytes, want 100 then %d", len(a), len(b), bound-100)
	}
}

// A store that a shrunk window leaves a third empty is replaced by a
// smaller one, with the held bytes in order; one that fits is kept.
func TestRingShrinksWithTheWindow(t *testing.T) {
	const bound = 4 << 20
	var r ring
	r.push(bytes.Repeat([]byte{1}, 3<<20), bound, bound)
	if len(r.store) != 3<<20 {
		t.Fatalf("store of %d bytes for 3 MiB", len(r.store))
	}
	r.drop(3<<20 - 100)
	r.push(bytes.Repeat([]byte{2}, 1000), 2<<20+1, bound)
	if len(r.store) != 3<<20 {
		t.Fatalf("a window of 2 MiB and a byte, which needs most of the store, replaced it with %d bytes", len(r.store))
	}
	r.push(bytes.Repeat([]byte{3}, 1000), 256<<10, bound)
	if len(r.store) != 256<<10 {
		t.Fatalf("a window of 256 KiB left a store of %d bytes", len(r.store))
	}
	a, b := r.segments()
	got := append(append([]byte(nil), a...), b...)
	want := append(append(bytes.Repeat([]byte{1}, 100), bytes.Repeat([]byte{2}, 1000)...), bytes.Repeat([]byte{3}, 1000)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("after the shrink the ring holds %d bytes that differ from the %d pushed", len(got), len(want))
	}
	// Held bytes beyond the window keep a store that holds them.
	r.push(bytes.Repeat([]byte{4}, 1<<20), 64<<10, bound)
	if r.len() != 1<<20+2100 || len(r.store) < r.len() {
		t.Fatalf("holds %d in a store of %d", r.len(), len(r.store))
	}
}

// liveHeap is the heap that survives two collections: a sync.Pool's
// contents survive one (its victim cache), so two show what nothing
// holds, and one what a pool still does.
func liveHeap(collections int) uint64 {
	for range collections {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// A ring that grows to a bulk stream's window keeps its store, not the
// smaller ones it outgrew on the way: in a bulk transfer little else is
// allocated, collections are rare, and stores kept in pools for the next
// stream to grow stayed as live heap for the transfer's whole life (7 to
// 11 MiB of the daemon's 8 bulk uploads at 1 Gbit/s).
func TestRingKeepsNoStoreItOutgrew(t *testing.T) {
	const bound = 8 << 20
	base := liveHeap(2)
	var r ring
	chunk := make([]byte, maxChunk)
	for r.len()+len(chunk) <= bound {
		r.push(chunk, bound, bound)
	}
	held := liveHeap(1) - base
	if len(r.store) != bound {
		t.Fatalf("a ring holding %d bytes has a store of %d", r.len(), len(r.store))
	}
	// What the test itself allocates is small; stores of 4, 2, 1 MiB...
	// kept for reuse would be another 8 MiB.
	if held > bound+bound/4 {
		t.Errorf("a ring that grew to %d MiB left %.1f MiB live after a collection", bound>>20, float64(held)/(1<<20))
	}
	runtime.KeepAlive(r.store)
}

// A store sized for a window beyond StartWindow is within an eighth of
// what the window needs, not rounded up to the next power of two: 8
// windows of 2.1 MiB would otherwise take 32 MiB.
func TestRingStoreFitsTheWindow(t *testing.T) {
	for _, window := range []int{300 << 10, 1<<20 + 1, 2<<20 + 100<<10, 3 << 20, 5<<20 + 7, 16<<20 + 3} {
		var r ring
		chunk := make([]byte, maxChunk)
		for r.len()+len(chunk) <= window {
			r.push(chunk, window, 64<<20)
		}
		if len(r.store) < r.len() || len(r.store) > window+window/8+maxChunk {
			t.Errorf("a window of %d bytes holding %d has a store of %d", window, r.len(), len(r.store))
		}
	}
}
