//go:build linux

package tunnel_test

// End-to-end tests of auto_forward: real servers started in the emulated
// sprite after the daemon (python's http.server through exec, PostgreSQL
// through the emulator's port map) appear on localhost and carry curl and
// psql, survive a restart and a sleep, and are withdrawn when they stop.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
	"github.com/spritefwd/spritefwd/tunnel"
)

// autoDaemon runs a daemon against sim with cfgYAML, keeping auto-forward
// state in stateDir; tune adjusts its options.
func autoDaemon(t *testing.T, sim *spritestest.Server, stateDir, cfgYAML string, logs *testsvc.LogBuffer, tune ...func(*tunnel.Options)) *tunnel.Daemon {
	t.Helper()
	cfg, err := config.Parse("auto.yaml", []byte(fmt.Sprintf("api_url: %s\ntoken_file: /nonexistent\nshutdown_grace: 1s\n%s", sim.URL, cfgYAML)))
	if err != nil {
		t.Fatal(err)
	}
	opts := tunnel.Options{
		Log:      zerolog.New(logs).Level(zerolog.DebugLevel).With().Timestamp().Logger(),
		StateDir: stateDir,
		Getenv: func(k string) string {
			if k == config.TokenEnv {
				return e2eToken
			}
			return ""
		},
	}
	for _, f := range tune {
		f(&opts)
	}
	d := tunnel.New(opts)
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	return d
}

// autoRow returns the auto-forward of sprite dev's port, if it listens.
func autoRow(d *tunnel.Daemon, port int) (tunnel.Status, bool) {
	for _, s := range d.Status() {
		if s.Name == "auto:dev:"+strconv.Itoa(port) && s.Discovered != nil && s.State == tunnel.StateListening && len(s.Addrs) > 0 {
			return s, true
		}
	}
	return tunnel.Status{}, false
}

func localPort(s tunnel.Status) string {
	_, p, _ := net.SplitHostPort(s.Addrs[0])
	return p
}

// startInSprite runs a server in the emulated sprite through exec, as a
// user would, and returns its pid, read from its first line. The exec
// stays open, which keeps the sprite awake, until done is called; the
// server runs on after it.
func startInSprite(t *testing.T, sim *spritestest.Server, cmd string) (pid int, done func()) {
	t.Helper()
	c, err := sprites.New(sprites.Options{APIURL: sim.URL, Token: e2eToken})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	sess, err := c.Exec(ctx, "dev", sprites.ExecOptions{Cmd: []string{"sh", "-c", "echo $$; exec " + cmd}, KeepRunning: true})
	if err != nil {
		cancel()
		c.Close()
		t.Fatal(err)
	}
	done = func() {
		sess.Close()
		cancel()
		c.Close()
	}
	defer func() {
		if t.Failed() {
			done()
		}
	}()
	var line string
	for !strings.Contains(line, "\n") {
		ev, err := sess.Next(ctx)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		if ev.Stream == sprites.StreamStdout {
			line += string(ev.Data)
		}
	}
	pid, err = strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("%s printed %q, not a pid", cmd, line)
	}
	return pid, done
}

// startWebInSprite starts python's HTTP server in the emulated sprite on
// a free port, and returns the port and the server's pid once it listens.
// Its exec stays open until then: on a loaded machine python can take
// longer to start than a test's short idle timer, and a sprite that
// sleeps freezes it. A port found free can be taken before python binds
// it (parallel tests connect from ephemeral ports too): a server that
// exits is started again on another port.
func startWebInSprite(t *testing.T, sim *spritestest.Server) (port, pid int) {
	t.Helper()
	for range 5 {
		port = testsvc.FreePort(t)
		var done func()
		pid, done = startInSprite(t, sim, fmt.Sprintf("python3 -m http.server --bind 127.0.0.1 %d", port))
		listens := false
		testsvc.Eventually(t, "the web server to listen in the sprite, or exit", func() bool {
			listens = slices.Contains(sim.Listening("dev"), port)
			return listens || !running(pid)
		})
		done()
		if listens {
			return port, pid
		}
		t.Logf("the web server (pid %d) exited before it listened on %d; another port", pid, port)
	}
	t.Fatal("the web server never listened in the sprite")
	return 0, 0
}

// running reports whether pid is a live process, not gone nor a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func curlStatus(t *testing.T, port string) (string, error) {
	return curl(t, "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:"+port+"/")
}

// It owns its emulator, servers, daemons and agent port, and asserts no
// time: it runs in parallel (see e2e_test.go). The delays it logs are
// then upper bounds.
func TestE2EAutoForward(t *testing.T) {
	t.Parallel()
	testsvc.Need(t, "curl", "psql", "python3")
	pg := testsvc.StartPostgres(t)
	for _, mode := range []string{"direct", "mux"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			autoForwardE2E(t, mode, pg)
		})
	}
}

func autoForwardE2E(t *testing.T, mode string, pg *testsvc.Postgres) {
	// Open links keep the sprite awake, as the notes say of the real
	// service: no fast pings needed, which a loaded machine would miss.
	const idle = 3 * time.Second
	sim := spritestest.NewServer(spritestest.Options{Token: e2eToken, IdleSleep: idle, LinksKeepAwake: true, WakeDelay: 300 * time.Millisecond, MaxMessage: testsvc.SimMaxMessage(t)})
	t.Cleanup(sim.Close)
	sim.CreateSprite("dev")
	_, canary, _ := net.SplitHostPort(testsvc.Serve(t, testsvc.Echo))
	canaryPort, _ := strconv.Atoi(canary)
	sim.Map("dev", canaryPort, "127.0.0.1:"+canary)
	settings := "warm_links: 0\n"
	if mode == "mux" {
		settings += fmt.Sprintf("agent_binary: %s\nagent_port: %d\nmux_idle_timeout: 1s\n", agentBinary(t), testsvc.FreePort(t))
	}
	cfgYAML := settings + fmt.Sprintf("sprites:\n  dev: {auto_forward: true, mode: %s}\nforwards:\n  - {name: canary, listen: 0, sprite: dev, port: %d, mode: %s}\n", mode, canaryPort, mode)
	stateDir := t.TempDir()
	logs := &testsvc.LogBuffer{}
	d := autoDaemon(t, sim, stateDir, cfgYAML, logs)
	stopped := false
	defer func() {
		if !stopped {
			d.Shutdown(time.Second)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs)
		}
	}()
	e := &e2e{sim: sim, d: d, logs: logs}

	// A connection in use: the sprite is awake for it, and discovery rides
	// on it (the mux session, or direct mode's exec while it is open).
	hold := func() net.Conn {
		c, err := net.Dial("tcp", "127.0.0.1:"+e.port(t, "canary"))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("canary echo: %v", err)
		}
		return c
	}
	busy := hold()
	before, _ := sim.SpriteStats("dev")
	busyStart := time.Now()

	web, pid := startWebInSprite(t, sim)
	delay := testsvc.Eventually(t, "the sprite's new web server on localhost", func() bool { _, ok := autoRow(d, web); return ok })
	t.Logf("%s: discovery delay (the sprite's server listens to the local listener up): %v", mode, delay.Round(10*time.Millisecond))
	row, _ := autoRow(d, web)
	// The server holds its port on this machine too: the sprite shares
	// its network, so the listener takes the next free port.
	if lp := localPort(row); lp == strconv.Itoa(web) {
		t.Fatalf("auto-forward of %d listens on %s, which the server itself holds", web, lp)
	}
	if mode == "mux" && row.Discovered.Process != "python3" {
		t.Errorf("discovered process %q, want python3", row.Discovered.Process)
	}
	if out, err := curlStatus(t, localPort(row)); err != nil || out != "200" {
		t.Fatalf("curl: %v %s", err, out)
	}

	// The map makes the sprite list postgres's port. postgres listens on
	// this machine's loopback too, where the agent (mux) reaches it.
	db := pg.Port
	sim.Map("dev", db, "127.0.0.1:"+strconv.Itoa(db))
	delay = testsvc.Eventually(t, "the sprite's postgres on localhost", func() bool { _, ok := autoRow(d, db); return ok })
	t.Logf("%s: discovery delay (postgres's port mapped to the local listener up): %v", mode, delay.Round(10*time.Millisecond))
	dbRow, _ := autoRow(d, db)
	if out, err := psql(t, localPort(dbRow), "select 'auto'"); err != nil || out != "auto\n" {
		t.Fatalf("psql: %v %s", err, out)
	}
	busyFor := time.Since(busyStart)
	mid, _ := sim.SpriteStats("dev")
	t.Logf("%s: busy %v: %d API calls, %d execs, %d proxy links (curl, psql and the canary's included)", mode, busyFor.Round(100*time.Millisecond),
		mid.APICalls-before.APICalls, mid.Execs-before.Execs, mid.ProxyConnects-before.ProxyConnects)
	if strings.Count(logs.String(), fmt.Sprintf("auto-forward: sprite dev port %d on", web)) != 1 {
		t.Errorf("the discovery of %d is not logged once:\n%s", web, logs)
	}

	// Idle: no client, the sprite sleeps on its own timer.
	busy.Close()
	closed := time.Now()
	idleStart, _ := sim.SpriteStats("dev") // a mux deploy on a loaded machine may outlast the idle timer
	testsvc.Eventually(t, "the idle sprite to sleep", func() bool { st, _ := sim.SpriteStats("dev"); return st.State != "running" })
	asleep, _ := sim.SpriteStats("dev")
	t.Logf("%s: idle sprite slept %v after the last connection closed (idle timer %v)", mode, time.Since(closed).Round(100*time.Millisecond), idle)
	if asleep.Wakes != idleStart.Wakes {
		t.Errorf("the idle sprite woke %d times", asleep.Wakes-idleStart.Wakes)
	}

	// A restart keeps the listeners, without waking the sprite.
	d.Shutdown(time.Second)
	d = autoDaemon(t, sim, stateDir, cfgYAML, logs)
	e.d = d
	row, ok := autoRow(d, web)
	if _, ok2 := autoRow(d, db); !ok || !ok2 {
		t.Fatalf("after a restart the auto-forwards are gone: %+v", d.Status())
	}
	if st, _ := sim.SpriteStats("dev"); st.Wakes != asleep.Wakes || st.APICalls != asleep.APICalls {
		t.Errorf("the restart cost %d API calls and %d wakes; want none", st.APICalls-asleep.APICalls, st.Wakes-asleep.Wakes)
	}
	// A connection to one wakes the sprite, as on any forward.
	if out, err := curlStatus(t, localPort(row)); err != nil || out != "200" {
		t.Fatalf("curl through the restored auto-forward: %v %s", err, out)
	}
	if st, _ := sim.SpriteStats("dev"); st.Wakes != asleep.Wakes+1 {
		t.Errorf("the sprite woke %d times, want 1 (the curl)", st.Wakes-asleep.Wakes)
	}

	// Servers that stop are withdrawn.
	busy = hold()
	defer busy.Close()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sim.Unmap("dev", db)
	testsvc.Eventually(t, "the stopped servers' auto-forwards to be withdrawn", func() bool {
		_, w := autoRow(d, web)
		_, p := autoRow(d, db)
		return !w && !p
	})
	if c, err := net.Dial("tcp", "127.0.0.1:"+localPort(dbRow)); err == nil {
		c.Close()
		t.Errorf("withdrawn, yet local port %s still accepts", localPort(dbRow))
	}
	d.Shutdown(time.Second)
	stopped = true
}

// A mux sprite whose agent cannot be deployed is served in direct mode,
// and its ports are found the direct way.
func TestE2EAutoForwardMuxFallback(t *testing.T) {
	t.Parallel()
	sim := spritestest.NewServer(spritestest.Options{Token: e2eToken, IdleSleep: -1, MaxMessage: testsvc.SimMaxMessage(t)})
	t.Cleanup(sim.Close)
	sim.CreateSprite("dev")
	_, canary, _ := net.SplitHostPort(testsvc.Serve(t, testsvc.Echo))
	canaryPort, _ := strconv.Atoi(canary)
	sim.Map("dev", canaryPort, "127.0.0.1:"+canary)
	logs := &testsvc.LogBuffer{}
	d := autoDaemon(t, sim, t.TempDir(), fmt.Sprintf("agent_binary: /nonexistent/spritefwd-{arch}\nagent_port: %d\n"+
		"sprites:\n  dev: {auto_forward: true, mode: mux}\nforwards:\n  - {name: canary, listen: 0, sprite: dev, port: %d, mode: mux}\n",
		testsvc.FreePort(t), canaryPort), logs)
	defer d.Shutdown(time.Second)
	e := &e2e{sim: sim, d: d, logs: logs}
	c, err := net.Dial("tcp", "127.0.0.1:"+e.port(t, "canary"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("canary: %v\n%s", err, logs)
	}
	// A server "in the sprite": the map's target is an echo server here.
	port := testsvc.FreePort(t)
	sim.Map("dev", port, testsvc.Serve(t, testsvc.Echo))
	testsvc.Eventually(t, "the mapped port on localhost", func() bool { _, ok := autoRow(d, port); return ok })
	row, _ := autoRow(d, port)
	if localPort(row) != strconv.Itoa(port) {
		t.Errorf("port %d is free here, yet its auto-forward listens on %s", port, localPort(row))
	}
	ec, err := net.Dial("tcp", row.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	if _, err := ec.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(ec, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo through the auto-forward: %q %v", buf, err)
	}
}

// A sprite that no connection of ours reaches: asleep, only the list of
// sprites is asked, which wakes nothing; woken by the user, it is looked
// at once and the server it runs appears on localhost; idle again, it
// sleeps on its own timer.
func TestE2EAutoForwardRunningSpriteWithNoConnection(t *testing.T) {
	t.Parallel()
	testsvc.Need(t, "curl", "python3")
	for _, mode := range []string{"direct", "mux"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			const idle = 3 * time.Second
			sim := spritestest.NewServer(spritestest.Options{Token: e2eToken, IdleSleep: idle, LinksKeepAwake: true, WakeDelay: 300 * time.Millisecond, MaxMessage: testsvc.SimMaxMessage(t)})
			t.Cleanup(sim.Close)
			sim.CreateSprite("dev")
			// The user's server, started before the sprite last slept.
			web, _ := startWebInSprite(t, sim)
			if err := sim.Sleep("dev"); err != nil {
				t.Fatal(err)
			}

			logs := &testsvc.LogBuffer{}
			d := autoDaemon(t, sim, t.TempDir(), fmt.Sprintf("warm_links: 0\nagent_port: %d\nsprites:\n  dev: {auto_forward: true, mode: %s}\n", testsvc.FreePort(t), mode), logs,
				func(o *tunnel.Options) { o.AutoListEvery = 100 * time.Millisecond })
			t.Cleanup(func() {
				d.Shutdown(time.Second)
				if t.Failed() {
					t.Logf("daemon log:\n%s", logs)
				}
			})

			asleep, _ := sim.SpriteStats("dev")
			lists := sim.ListCalls()
			testsvc.Eventually(t, "three looks at the list of sprites", func() bool { return sim.ListCalls() >= lists+3 })
			if st, _ := sim.SpriteStats("dev"); st.Wakes != asleep.Wakes || st.APICalls != asleep.APICalls || st.State == "running" {
				t.Fatalf("asleep, the sprite had %d wakes and %d API calls from spritefwd (state %s); want none", st.Wakes-asleep.Wakes, st.APICalls-asleep.APICalls, st.State)
			}
			if _, ok := autoRow(d, web); ok {
				t.Fatal("a port of a sprite never looked at is listening")
			}

			// The user wakes the sprite (a status call here; a console in life).
			c, err := sprites.New(sprites.Options{APIURL: sim.URL, Token: e2eToken})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Get(context.Background(), "dev"); err != nil {
				t.Fatal(err)
			}
			woke := time.Now()
			testsvc.Eventually(t, "the server of a sprite with no connection on localhost", func() bool { _, ok := autoRow(d, web); return ok })
			t.Logf("%s: found %v after the user woke the sprite (list every 100 ms)", mode, time.Since(woke).Round(10*time.Millisecond))
			looked, _ := sim.SpriteStats("dev")
			if n := looked.Execs - asleep.Execs; n != 1 {
				t.Errorf("%d execs to look at a running sprite, want 1", n)
			}
			if mode == "direct" {
				row, _ := autoRow(d, web)
				if out, err := curlStatus(t, localPort(row)); err != nil || out != "200" {
					t.Fatalf("curl: %v %s", err, out)
				}
			}
			testsvc.Eventually(t, "the idle sprite to sleep", func() bool { st, _ := sim.SpriteStats("dev"); return st.State != "running" })
			if st, _ := sim.SpriteStats("dev"); st.Wakes != looked.Wakes {
				t.Errorf("the sprite woke %d times after it was looked at", st.Wakes-looked.Wakes)
			}
		})
	}
}
