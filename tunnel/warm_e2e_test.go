package tunnel_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
	"github.com/spritefwd/spritefwd/tunnel"
)

// recordingEcho echoes, and keeps what each connection received.
type recordingEcho struct {
	mu    sync.Mutex
	conns [][]byte
}

func (r *recordingEcho) serve(t *testing.T) string {
	return testsvc.Serve(t, func(c net.Conn) {
		r.mu.Lock()
		i := len(r.conns)
		r.conns = append(r.conns, nil)
		r.mu.Unlock()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				r.mu.Lock()
				r.conns[i] = append(r.conns[i], buf[:n]...)
				r.mu.Unlock()
				c.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	})
}

func (r *recordingEcho) received() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]byte, len(r.conns))
	for i, c := range r.conns {
		out[i] = append([]byte(nil), c...)
	}
	return out
}

// holdOpen opens a connection through addr and keeps it open until the
// test ends, once a byte has made the round trip: the forward is in use,
// and its sprite known to run.
func holdOpen(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte("x"))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return c
}

// While a forward is in use, its sprite holds spare links and new
// connections take them; once idle past warm_linger, it holds none, and a
// sprite that counts open WebSockets as activity sleeps on its own timer.
func TestE2EWarmLinksWhileInUseOnly(t *testing.T) {
	echo := &recordingEcho{}
	addr := echo.serve(t)
	e := startE2E(t, spritestest.Options{IdleSleep: 2 * time.Second, LinksKeepAwake: true},
		map[string]string{"box:6000": addr}, "warm_links: 2\nwarm_linger: 300ms\n", "{name: echo, listen: 0, sprite: box, port: 6000}")
	local := "127.0.0.1:" + e.port(t, "echo")

	// The first connection finds no spare; holding it open makes the
	// forward in use, and spares follow.
	held := holdOpen(t, local)
	testsvc.Eventually(t, "two spare links", func() bool {
		st, _ := e.sim.SpriteStats("box")
		return e.status(t, "echo").WarmLinks == 2 && st.WaitingLinks == 2
	})
	for i := range 5 {
		if err := exchange(local, []byte(fmt.Sprintf("request %d", i))); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		// Each spare taken is replaced; a burst faster than that misses.
		testsvc.Eventually(t, "the spare replaced", func() bool { return e.status(t, "echo").WarmLinks == 2 })
	}
	// A connection is counted as its race ends, which may be just after
	// its client had the echo.
	counted := func(want int64) func() bool {
		return func() bool {
			st := e.status(t, "echo")
			return st.WarmHits+st.WarmMisses+st.WarmFallbacks >= want
		}
	}
	testsvc.Eventually(t, "six connections counted", counted(6))
	st := e.status(t, "echo")
	if st.WarmMisses != 1 || st.WarmHits != 5 || st.WarmFallbacks != 0 {
		t.Errorf("misses %d, hits %d, fallbacks %d; want 1, 5, 0", st.WarmMisses, st.WarmHits, st.WarmFallbacks)
	}
	got := echo.received()
	if len(got) != 6 {
		t.Fatalf("the target saw %d connections, want 6: a spare must dial nothing until used", len(got))
	}
	for i := range 5 {
		if want := fmt.Sprintf("request %d", i); string(got[i+1]) != want {
			t.Errorf("connection %d delivered %q, want %q once", i+1, got[i+1], want)
		}
	}
	if sim, _ := e.sim.SpriteStats("box"); sim.QueryInits != 1 {
		t.Errorf("%d links took their target from the query, want only the first", sim.QueryInits)
	}

	held.Close()
	testsvc.Eventually(t, "the spares to close after warm_linger", func() bool {
		st, _ := e.sim.SpriteStats("box")
		return e.status(t, "echo").WarmLinks == 0 && st.WaitingLinks == 0 && st.ActiveLinks == 0
	})
	// The emulator counts open links as activity: had a spare stayed, the
	// sprite would never sleep.
	testsvc.Eventually(t, "the idle sprite to sleep", func() bool {
		st, _ := e.sim.SpriteStats("box")
		return st.Sleeps == 1
	})
	sim, _ := e.sim.SpriteStats("box")
	if sim.Wakes != 0 || sim.WaitingLinks != 0 {
		t.Errorf("asleep: %d wakes, %d waiting links; spares must not wake an idle sprite", sim.Wakes, sim.WaitingLinks)
	}
}

// A spare that answers pings but whose server end never answers the init
// costs the client the fallback delay; a fresh link then carries the
// connection, with the client's first 64 KiB replayed on it whole. (The
// stalled server never dials, so it delivers nothing itself: what a late
// but live spare can repeat is said in the README, not tested here.)
func TestE2EWarmStalledSpareFallsBack(t *testing.T) {
	echo := &recordingEcho{}
	addr := echo.serve(t)
	e := startE2E(t, spritestest.Options{IdleSleep: -1},
		map[string]string{"box:6000": addr}, "warm_links: 1\n", "{name: echo, listen: 0, sprite: box, port: 6000}")
	local := "127.0.0.1:" + e.port(t, "echo")
	holdOpen(t, local)
	testsvc.Eventually(t, "a spare link", func() bool { return e.status(t, "echo").WarmLinks == 1 })

	e.sim.StallInits(true)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 4<<10) // 64 KiB: the whole replay budget
	if err := exchange(local, msg); err != nil {
		t.Fatal(err)
	}
	e.sim.StallInits(false)
	testsvc.Eventually(t, "the stalled connection counted", func() bool {
		st := e.status(t, "echo")
		return st.WarmHits+st.WarmMisses+st.WarmFallbacks >= 2 // the held one missed
	})
	st := e.status(t, "echo")
	if st.WarmFallbacks != 1 || st.WarmHits != 0 {
		t.Errorf("fallbacks %d, hits %d; want the stalled spare to fall back once", st.WarmFallbacks, st.WarmHits)
	}
	got := echo.received()
	if len(got) != 2 || !bytes.Equal(got[1], msg) {
		t.Fatalf("the target saw %d connections; the second got %d bytes, want %d once", len(got), len(got[len(got)-1]), len(msg))
	}
	if errs := st.Errors; len(errs) != 0 {
		t.Errorf("errors %v: a fallback is not a failure", errs)
	}
	// The next connection takes a new spare, which works.
	testsvc.Eventually(t, "a new spare link", func() bool { return e.status(t, "echo").WarmLinks == 1 })
	if err := exchange(local, []byte("after")); err != nil {
		t.Fatal(err)
	}
	testsvc.Eventually(t, "a hit after the stall ended", func() bool { return e.status(t, "echo").WarmHits == 1 })
}

// A port with nothing listening fails a connection begun on a spare as it
// fails a fresh one: a refused error with its advice, no data.
func TestE2EWarmSpareToClosedPort(t *testing.T) {
	echo := &recordingEcho{}
	addr := echo.serve(t)
	e := startE2E(t, spritestest.Options{IdleSleep: -1}, map[string]string{"box:6000": addr}, "warm_links: 1\n",
		"{name: echo, listen: 0, sprite: box, port: 6000}", "{name: closed, listen: 0, sprite: box, port: 6001}")
	holdOpen(t, "127.0.0.1:"+e.port(t, "echo"))
	testsvc.Eventually(t, "a spare link", func() bool { return e.status(t, "closed").WarmLinks == 1 })

	c, err := net.Dial("tcp", "127.0.0.1:"+e.port(t, "closed"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, rerr := c.Read(make([]byte, 16))
	if n != 0 || rerr == nil || rerr == io.EOF {
		t.Errorf("read %d bytes, %v; want a reset", n, rerr)
	}
	testsvc.Eventually(t, "the refusal recorded", func() bool {
		return e.status(t, "closed").Errors[tunnel.ClassRefused] == 1
	})
	// The count comes before the log line that gives the advice.
	testsvc.Eventually(t, "the advice in the log", func() bool {
		return bytes.Contains([]byte(e.logs.String()), []byte("nothing listens"))
	})
}

// Through the SOCKS port, a port with nothing listening is refused with
// reply 5 whether or not a spare link is at hand: a front that answers its
// client waits for "connected" even on a spare.
func TestE2EWarmSOCKSRefusalOnASpare(t *testing.T) {
	testsvc.Need(t, "curl")
	echo := &recordingEcho{}
	maps := webSprites(t)
	maps["web:6000"] = echo.serve(t)
	e := startE2E(t, spritestest.Options{}, maps, "socks: 127.0.0.1:0\nwarm_links: 1\n", "{name: echo, listen: 0, sprite: web, port: 6000}")
	addr := e.d.SOCKSAddr()

	out, err := curl(t, "--socks5-hostname", addr, "http://web:3001/")
	t.Logf("no spare: %v %s", err, strings.TrimSpace(out))
	if err == nil || !strings.Contains(out, "(5)") {
		t.Fatalf("without a spare: %v, %q; want reply 5, connection refused", err, out)
	}

	holdOpen(t, "127.0.0.1:"+e.port(t, "echo"))
	testsvc.Eventually(t, "a spare link", func() bool { return e.status(t, "echo").WarmLinks == 1 })
	out, err = curl(t, "--socks5-hostname", addr, "http://web:3001/")
	t.Logf("on a spare: %v %s", err, strings.TrimSpace(out))
	if err == nil || !strings.Contains(out, "(5)") {
		t.Errorf("on a spare: %v, %q; want reply 5, connection refused, as without one", err, out)
	}
}
