package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

const testToken = "org/1/tok/daemon-test-secret"

// source writes forever, for tests that cut a link mid-stream.
func source(c net.Conn) {
	buf := bytes.Repeat([]byte("spritefwd"), 4096)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

type rig struct {
	sim  *spritestest.Server
	d    *Daemon
	logs *testsvc.LogBuffer
	base string // config text before forwards:
}

func newRig(t *testing.T, simOpts spritestest.Options, cfgExtra, forwards string) *rig {
	t.Helper()
	if simOpts.Token == "" {
		simOpts.Token = testToken
	}
	if simOpts.WakeDelay == 0 {
		simOpts.WakeDelay = 100 * time.Millisecond
	}
	if simOpts.IdleSleep == 0 {
		simOpts.IdleSleep = -1
	}
	sim := spritestest.NewServer(simOpts)
	t.Cleanup(sim.Close)
	sim.Map("db", 7, testsvc.Serve(t, testsvc.Echo))
	sim.Map("db", 19, testsvc.Serve(t, source))
	r := &rig{sim: sim, logs: &testsvc.LogBuffer{}}
	if !strings.Contains(cfgExtra, "keepalive:") {
		cfgExtra += "keepalive: 1s\n"
	}
	if !strings.Contains(cfgExtra, "half_close_timeout:") {
		cfgExtra += "half_close_timeout: 300ms\n"
	}
	r.base = fmt.Sprintf("api_url: %s\ntoken_file: /nonexistent\nshutdown_grace: 1s\n%s", sim.URL, cfgExtra)
	r.d = New(Options{
		Log:    zerolog.New(r.logs).Level(zerolog.DebugLevel),
		Getenv: func(k string) string { return map[string]string{config.TokenEnv: testToken}[k] },
	})
	t.Cleanup(func() { r.d.Shutdown(time.Second) })
	r.apply(t, forwards)
	return r
}

func (r *rig) apply(t *testing.T, forwards string) {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(r.base+"forwards:\n"+forwards))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
}

// applyYAML applies a minimal config pointing at apiURL.
func applyYAML(t testing.TB, d *Daemon, apiURL, forwards string) {
	t.Helper()
	cfg, err := config.Parse("bench.yaml", []byte("api_url: "+apiURL+"\ntoken_file: /nonexistent\nforwards:\n"+forwards))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) status(t *testing.T, name string) Status {
	t.Helper()
	for _, s := range r.d.Status() {
		if s.Name == name && s.State != StateDraining {
			return s
		}
	}
	t.Fatalf("no forward %q in %+v", name, r.d.Status())
	return Status{}
}

func (r *rig) dial(t *testing.T, name string) *net.TCPConn {
	t.Helper()
	st := r.status(t, name)
	if len(st.Addrs) == 0 {
		t.Fatalf("forward %s is not listening: %+v", name, st)
	}
	c, err := net.Dial("tcp", st.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func echoCheck(t *testing.T, c net.Conn, n int) {
	t.Helper()
	if err := echo(c, n); err != nil {
		t.Fatal(err)
	}
}

// echo sends n random bytes through c and checks they come back. It
// returns what went wrong, so that clients on goroutines of their own can
// report it with t.Error.
func echo(c net.Conn, n int) error {
	data := make([]byte, n)
	rand.Read(data)
	want := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() { _, err := c.Write(data); errc <- err }()
	h := sha256.New()
	if _, err := io.CopyN(h, c, int64(n)); err != nil {
		return fmt.Errorf("reading echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("writing echo: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		return errors.New("echo corrupted")
	}
	return nil
}

func TestForwardEchoAndStats(t *testing.T) {
	r := newRig(t, spritestest.Options{}, "", "  - 0:db:7\n")
	c := r.dial(t, "db:7")
	echoCheck(t, c, 4<<20)
	c.Close()
	testsvc.Eventually(t, "connection to close", func() bool { return r.status(t, "db:7").Open == 0 })
	st := r.status(t, "db:7")
	if st.Total != 1 || st.BytesIn != 4<<20 || st.BytesOut != 4<<20 {
		t.Errorf("status %+v, want 1 connection and 4 MiB each way", st.StatsSnapshot)
	}
	if sim, _ := r.sim.SpriteStats("db"); sim.BytesIn != st.BytesIn || sim.BytesOut != st.BytesOut {
		t.Errorf("emulator counted %d/%d, daemon %d/%d", sim.BytesIn, sim.BytesOut, st.BytesIn, st.BytesOut)
	}
	if strings.Contains(r.logs.String(), testToken) {
		t.Error("the token appeared in the log")
	}
}

// TestForwardWakesSleepingSprite: a client of a sleeping sprite sees a
// slower connect, never an error, whatever the service does while waking.
func TestForwardWakesSleepingSprite(t *testing.T) {
	for _, mode := range []spritestest.ColdProxy{spritestest.ColdBlock, spritestest.ColdFail, spritestest.ColdDrop} {
		t.Run(string(mode), func(t *testing.T) {
			r := newRig(t, spritestest.Options{WakeDelay: 500 * time.Millisecond, Faults: spritestest.Faults{ColdProxy: mode}}, "", "  - 0:db:7\n")
			r.sim.Sleep("db")
			const clients = 5
			var wg sync.WaitGroup
			for range clients {
				// Connecting is local and prompt; the echo is what waits
				// for the wake, so only it runs on its own goroutine.
				c := r.dial(t, "db:7")
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := echo(c, 1024); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if sim, _ := r.sim.SpriteStats("db"); sim.Wakes != 1 || sim.State != "running" {
				t.Errorf("emulator %+v, want one wake", sim)
			}
			// Under block the wake hides inside one slow handshake: there is
			// nothing to retry, so nothing counts it.
			wantWakes := int64(1)
			if mode == spritestest.ColdBlock {
				wantWakes = 0
			}
			st := r.status(t, "db:7")
			if st.Wakes != wantWakes || st.SpriteState != StateRunning {
				t.Errorf("status wakes %d state %s, want %d", st.Wakes, st.SpriteState, wantWakes)
			}
			if wantWakes > 0 && (st.WakeWait <= 0 || !strings.Contains(r.logs.String(), "sprite awake")) {
				t.Errorf("wake wait %v; log:\n%s", st.WakeWait, r.logs.String())
			}
		})
	}
}

// TestForwardLinkDropResets: a link cut mid-stream reaches the client as
// ECONNRESET, never EOF, and the forward keeps serving.
func TestForwardLinkDropResets(t *testing.T) {
	r := newRig(t, spritestest.Options{}, "", "  - 0:db:19\n  - 0:db:7\n")
	c := r.dial(t, "db:19")
	if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	r.sim.DropLinks("db")
	_, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the drop the client read %v, want ECONNRESET", err)
	}
	echoCheck(t, r.dial(t, "db:7"), 1024)
	testsvc.Eventually(t, "link_broken counted", func() bool { return r.status(t, "db:19").Errors[ClassLinkBroken] == 1 })
}

func TestForwardPermanentFailsFast(t *testing.T) {
	for _, tt := range []struct {
		name, rule, token, wantLog string
	}{
		{"bad token", "  - 0:db:7\n", "wrong", "token rejected; check token_file"},
		{"no such sprite", "  - 0:nope:7\n", testToken, "sprite nope does not exist"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, spritestest.Options{Token: tt.token, WakeDelay: time.Second}, "wake_timeout: 30s\n", tt.rule)
			name := r.d.Status()[0].Name
			start := time.Now()
			// The reset can be so quick that it lands before connect returns.
			c, err := net.Dial("tcp", r.status(t, name).Addrs[0])
			if err == nil {
				defer c.Close()
				_, err = c.Read(make([]byte, 1))
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read %v, want a reset", err)
			}
			// Far less than wake_timeout: nothing was retried.
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("permanent failure took %v", el)
			}
			// Once its handler has ended, the connection can make no more
			// requests: any retry would have come before.
			testsvc.Eventually(t, "the connection's handler to end", func() bool { return r.status(t, name).Open == 0 })
			if n := r.sim.Requests(); n != 1 {
				t.Errorf("emulator saw %d requests, want exactly 1", n)
			}
			if !strings.Contains(r.logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, r.logs.String())
			}
		})
	}
}

// TestApplyKeepsUnchangedForwards: a reload adds, removes and changes
// forwards without disturbing a connection on an unchanged one.
func TestApplyKeepsUnchangedForwards(t *testing.T) {
	r := newRig(t, spritestest.Options{}, "", "  - {name: a, listen: 0, sprite: db, port: 7}\n  - {name: b, listen: 0, sprite: db, port: 7}\n")
	a := r.dial(t, "a")
	echoCheck(t, a, 1024)
	bAddr := r.status(t, "b").Addrs[0]
	r.apply(t, "  - {name: a, listen: 0, sprite: db, port: 7}\n  - {name: c, listen: 0, sprite: db, port: 7}\n")
	echoCheck(t, a, 1024) // same connection, still carried
	echoCheck(t, r.dial(t, "c"), 1024)
	if _, err := net.Dial("tcp", bAddr); err == nil {
		t.Error("removed forward b still accepts")
	}
	if st := r.status(t, "a"); st.Total != 1 {
		t.Errorf("forward a was restarted: %+v", st.StatsSnapshot)
	}
}

func TestPortInUseFailsOneForward(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	r := newRig(t, spritestest.Options{}, "", fmt.Sprintf("  - {name: taken, listen: %q, sprite: db, port: 7}\n  - {name: ok, listen: 0, sprite: db, port: 7}\n", busy.Addr().String()))
	st := r.status(t, "taken")
	if st.State != StateFailed || !strings.Contains(st.BindError, "already in use") {
		t.Errorf("taken: %+v", st)
	}
	echoCheck(t, r.dial(t, "ok"), 1024)
}

// TestKeepaliveHoldsSpriteAwake: an idle connection survives several sleep
// periods because its pings count as activity; once it closes, the sprite
// is free to sleep.
func TestKeepaliveHoldsSpriteAwake(t *testing.T) {
	const idle = time.Second // pings every 150 ms leave a wide margin on a busy machine
	r := newRig(t, spritestest.Options{IdleSleep: idle}, "keepalive: 150ms\n", "  - 0:db:7\n")
	c := r.dial(t, "db:7")
	echoCheck(t, c, 16)
	// Not a wait for an event: the emulator's idle timer runs on real time,
	// and three idle periods without traffic are the scenario itself.
	time.Sleep(3 * idle)
	if sim, _ := r.sim.SpriteStats("db"); sim.Sleeps != 0 {
		t.Fatalf("sprite slept %d times under an open, pinged link", sim.Sleeps)
	}
	echoCheck(t, c, 16)
	c.Close()
	testsvc.Eventually(t, "the sprite to sleep once idle", func() bool {
		sim, _ := r.sim.SpriteStats("db")
		return sim.State == "cold"
	})
}

// TestLocalhostBindsBothLoopbacks: localhost means 127.0.0.1 and ::1 on the
// same port, even when the port is chosen by the system; without IPv6 it
// still serves on 127.0.0.1.
func TestLocalhostBindsBothLoopbacks(t *testing.T) {
	r := newRig(t, spritestest.Options{}, "", "  - {name: both, listen: \"localhost:0\", sprite: db, port: 7}\n")
	st := r.status(t, "both")
	if len(st.Addrs) == 0 || !strings.HasPrefix(st.Addrs[0], "127.0.0.1:") {
		t.Fatalf("addrs %v", st.Addrs)
	}
	_, port, _ := net.SplitHostPort(st.Addrs[0])
	for _, a := range st.Addrs {
		if _, p, _ := net.SplitHostPort(a); p != port {
			t.Errorf("listeners on different ports: %v", st.Addrs)
		}
	}
	for _, a := range st.Addrs {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		echoCheck(t, c, 32)
		c.Close()
	}
	if len(st.Addrs) == 1 {
		t.Log("no IPv6 loopback on this machine: served on 127.0.0.1 only")
	}
}

// TestReloadWhileConnecting changes wake_timeout while connections wait for
// a wake; run with -race, it guards the timeout's reads.
func TestReloadWhileConnecting(t *testing.T) {
	r := newRig(t, spritestest.Options{WakeDelay: 300 * time.Millisecond, Faults: spritestest.Faults{ColdProxy: spritestest.ColdFail}}, "wake_timeout: 20s\n", "  - {name: a, listen: 0, sprite: db, port: 7}\n")
	r.sim.Sleep("db")
	var wg sync.WaitGroup
	for range 4 {
		c := r.dial(t, "a")
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echo(c, 16); err != nil {
				t.Error(err)
			}
		}()
	}
	r.base = strings.Replace(r.base, "wake_timeout: 20s", "wake_timeout: 30s", 1)
	r.apply(t, "  - {name: a, listen: 0, sprite: db, port: 7}\n")
	wg.Wait()
}

// TestMessageTooBigIsNamed: a service that refuses even SafeMessage bytes
// closes a live link with 1009. The client gets the data that arrived and
// a reset; the log says what was refused and what is sent from now on,
// never "sprite slept or network dropped"; status counts it as
// message_too_big and shows the lowered size; the next connection works.
func TestMessageTooBigIsNamed(t *testing.T) {
	r := newRig(t, spritestest.Options{MaxMessage: 1000}, "", "  - 0:db:7\n")
	c := r.dial(t, "db:7")
	go c.Write(make([]byte, 64<<10))
	_, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read ended with %v, want a reset", err)
	}
	testsvc.Eventually(t, "the refusal in status", func() bool { return r.status(t, "db:7").Errors[ClassTooBig] == 1 })
	st := r.status(t, "db:7")
	if st.MaxMessage.Bytes != sprites.SafeMessage/2 || st.MaxMessage.State != sprites.LimitRefused || st.MaxMessage.Refusals != 1 {
		t.Errorf("max_message %+v, want %d after one refusal", st.MaxMessage, sprites.SafeMessage/2)
	}
	logs := r.logs.String()
	if !strings.Contains(logs, "the service refused a message of 1024 bytes on sprite db; sending at most 512 from now on") {
		t.Errorf("log does not name the refusal:\n%s", logs)
	}
	if strings.Contains(logs, "network dropped") {
		t.Errorf("a 1009 was logged as a drop:\n%s", logs)
	}
	echoCheck(t, r.dial(t, "db:7"), 1<<20)
}

// TestReloadReleasesRetiredPoolsAndWakers: a reload that changes the agent
// settings retires the sprite's pool, which closes once it has no stream
// (here at once) instead of living until shutdown; a sprite that no rule
// names any more loses its waker.
func TestReloadReleasesRetiredPoolsAndWakers(t *testing.T) {
	r := newRig(t, spritestest.Options{}, "", "  - {listen: 0, sprite: db, port: 7, mode: mux}\n")
	r.d.mu.Lock()
	waker := r.d.wakers["db"]
	r.d.mu.Unlock()
	first := r.d.agent("db", waker)
	base := r.base
	for i, idle := range []string{"31s", "32s", "33s"} {
		r.base = base + "mux_idle_timeout: " + idle + "\n"
		r.apply(t, "  - {listen: 0, sprite: db, port: 7, mode: mux}\n")
		if p := r.d.agent("db", waker); p == first {
			t.Fatalf("reload %d kept the pool", i+1)
		}
	}
	testsvc.Eventually(t, "the retired pools to close", func() bool {
		r.d.mu.Lock()
		defer r.d.mu.Unlock()
		return len(r.d.retired) == 0
	})
	if _, err := first.client.Open(context.Background(), nil, "localhost", 7, false, mux.StreamOptions{}); !errors.Is(err, mux.ErrClientClosed) {
		t.Errorf("a retired pool still opens streams: %v", err)
	}
	r.apply(t, "  - 0:other:7\n")
	r.d.mu.Lock()
	_, kept := r.d.wakers["db"]
	r.d.mu.Unlock()
	if kept {
		t.Error("the waker of a sprite no rule names is kept")
	}
}

// mux_memory bounds what every mux stream's window holds together, and a
// reload changes it without a restart.
func TestApplyMuxMemory(t *testing.T) {
	r := newRig(t, spritestest.Options{}, "", "  - {name: a, listen: 0, sprite: db, port: 7}\n")
	if used, got := r.d.MuxWindows(); got != config.DefaultMuxMemory || used != 0 {
		t.Fatalf("budget %d, %d used, without mux_memory and streams; want %d and 0", got, used, config.DefaultMuxMemory)
	}
	r.base += "mux_memory: 16MiB\n"
	r.apply(t, "  - {name: a, listen: 0, sprite: db, port: 7}\n")
	if _, got := r.d.MuxWindows(); got != 16<<20 {
		t.Fatalf("budget %d after a reload with mux_memory: 16MiB", got)
	}
}
