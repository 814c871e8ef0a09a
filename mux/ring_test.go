package mux

import (
	"bytes"
	"math/rand/v2"
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

// A store that a shrunk window leaves more than half empty is replaced by
// a smaller one, with the held bytes in order; one that fits is kept.
func TestRingShrinksWithTheWindow(t *testing.T) {
	const bound = 4 << 20
	var r ring
	r.push(bytes.Repeat([]byte{1}, 3<<20), bound, bound)
	if len(r.store) != 4<<20 {
		t.Fatalf("store of %d bytes for 3 MiB", len(r.store))
	}
	r.drop(3<<20 - 100)
	r.push(bytes.Repeat([]byte{2}, 1000), 3<<20, bound)
	if len(r.store) != 4<<20 {
		t.Fatalf("a window of 3 MiB, which needs the store, replaced it with %d bytes", len(r.store))
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
