package testsvc

import (
	"testing"
	"time"
)

// EventuallyLimit is how long Eventually waits before it fails. It is far
// above what any condition takes on an idle machine, because on a loaded
// CI runner a slow test is a nuisance, while one that fails is a false
// alarm. Tests whose point is a bound in time assert that bound themselves.
const EventuallyLimit = 30 * time.Second

// Eventually waits until cond holds and returns how long that took. It is
// for conditions that real sockets, processes or files bring about, which
// a synctest bubble cannot hold; code driven by timers and channels alone
// is tested in virtual time instead. It fails the test, naming what, if
// cond is still false after EventuallyLimit. Call it from the test's own
// goroutine: it may call t.Fatalf.
func Eventually(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	// A short first wait keeps quick conditions quick; the backoff keeps a
	// long wait from spinning on a machine that is busy enough already.
	wait := time.Millisecond
	for !cond() {
		if time.Since(start) > EventuallyLimit {
			t.Fatalf("waited %v for %s", EventuallyLimit, what)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
	return time.Since(start)
}
