// Package bench measures spritefwd against references taken in the same
// run on the same machine: a direct connection to the server (the physical
// limit), socat relaying in two hops (mirroring daemon plus emulator), and
// two Go processes that only copy bytes (the floor for a Go path of two
// processes). It reports and never fails on timings, since shared machines
// are noisy. Run it with `make bench`; it writes bench/results.json.
package bench
