//go:build unix

package main

// End-to-end tests of living with the daemon: hot reload under a live psql
// transaction, rejected edits, draining, status, metrics and the service
// Start/Stop path, against the emulator and a real PostgreSQL.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/control"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	svc "github.com/spritefwd/spritefwd/service"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
	"github.com/spritefwd/spritefwd/tunnel"
)

const e2eToken = "org/1/tok/cmd-e2e-secret"

type daemonRig struct {
	t      *testing.T
	sim    *spritestest.Server
	dir    string
	path   string // config file
	socket string
	header string // settings before forwards:
	r      *runner
}

// startDaemon runs the real runner (watcher, control socket, metrics) on a
// config file in a temporary directory.
func startDaemon(t *testing.T, simOpts spritestest.Options, maps map[int]string, settings, forwards string) *daemonRig {
	t.Helper()
	simOpts.Token = e2eToken
	if simOpts.IdleSleep == 0 {
		simOpts.IdleSleep = -1
	}
	if simOpts.WakeDelay == 0 {
		simOpts.WakeDelay = 300 * time.Millisecond
	}
	if simOpts.MaxMessage == 0 {
		simOpts.MaxMessage = testsvc.SimMaxMessage(t)
	}
	sim := spritestest.NewServer(simOpts)
	t.Cleanup(sim.Close)
	for port, target := range maps {
		sim.Map("db", port, target)
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(e2eToken+"\n"), 0o600)
	d := &daemonRig{t: t, sim: sim, dir: dir, path: filepath.Join(dir, "spritefwd.yaml"), socket: filepath.Join(dir, "ctl.sock")}
	if !strings.Contains(settings, "shutdown_grace:") {
		settings += "shutdown_grace: 1s\n"
	}
	d.header = fmt.Sprintf("api_url: %s\ntoken_file: %s\nhalf_close_timeout: 300ms\n%s", sim.URL, tokenFile, settings)
	os.WriteFile(d.path, []byte(d.header+"forwards:\n"+forwards), 0o600)
	cfg, err := config.Load(d.path)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(io.Discard)
	if testing.Verbose() {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr})
	}
	d.r = newRunner(runnerOptions{log: log, configPath: d.path, cfg: cfg, socket: d.socket, watch: true, poll: 200 * time.Millisecond})
	if err := d.r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.r.Stop() })
	return d
}

// rewrite replaces the config by rename, the way editors save.
func (d *daemonRig) rewrite(forwards string) {
	tmp := d.path + ".tmp"
	os.WriteFile(tmp, []byte(d.header+"forwards:\n"+forwards), 0o600)
	if err := os.Rename(tmp, d.path); err != nil {
		d.t.Fatal(err)
	}
}

// status runs `spritefwd status --json` against the control socket.
func (d *daemonRig) status() control.Status {
	d.t.Helper()
	var out, errOut bytes.Buffer
	if err := dispatch([]string{"status", "--json", "--socket", d.socket}, &out, &errOut); err != nil {
		d.t.Fatalf("status: %v %s", err, errOut.String())
	}
	var st control.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		d.t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	return st
}

func (d *daemonRig) forward(name string) (control.Forward, bool) {
	for _, f := range d.status().Forwards {
		if f.Name == name && f.State != tunnel.StateDraining {
			return f, true
		}
	}
	return control.Forward{}, false
}

func (d *daemonRig) addr(name string) string {
	d.t.Helper()
	f, ok := d.forward(name)
	if !ok || len(f.Addrs) == 0 {
		d.t.Fatalf("forward %s is not listening: %+v", name, d.status().Forwards)
	}
	return f.Addrs[0]
}

func echoOnce(t *testing.T, addr string, n int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOn(t, c, n)
}

func echoOn(t *testing.T, c net.Conn, n int) {
	t.Helper()
	msg := bytes.Repeat([]byte{'x'}, n)
	go c.Write(msg)
	got := make([]byte, n)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo of %d bytes: %v", n, err)
	}
}

// psqlSession is an interactive psql whose lines can be sent and read.
type psqlSession struct {
	t     *testing.T
	stdin io.WriteCloser
	lines chan string
	wait  func() error
}

func startPsql(t *testing.T, addr string) *psqlSession {
	host, port, _ := net.SplitHostPort(addr)
	cmd := testsvc.Command(t.Context(), t, "psql", "-h", host, "-p", port, "-U", "postgres", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "postgres")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &psqlSession{t: t, stdin: stdin, lines: make(chan string, 100), wait: cmd.Wait}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	return s
}

func (s *psqlSession) query(sql string) string {
	s.t.Helper()
	io.WriteString(s.stdin, sql+"\n")
	select {
	case l, ok := <-s.lines:
		if !ok {
			s.t.Fatalf("psql exited during %q", sql)
		}
		return l
	case <-time.After(30 * time.Second):
		s.t.Fatalf("no answer to %q", sql)
		return ""
	}
}

func TestE2EHotReloadKeepsLiveSession(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	d := startDaemon(t, spritestest.Options{}, map[int]string{5432: "unix:" + pg.Socket, 7: testsvc.Serve(t, testsvc.Echo)}, "",
		"  - {name: a, listen: 0, sprite: db, port: 5432}\n  - {name: c, listen: 0, sprite: db, port: 7}\n")

	s := startPsql(t, d.addr("a"))
	pid := s.query("select pg_backend_pid();")
	io.WriteString(s.stdin, "begin;\ncreate table reload_test(x int);\n")
	if got := s.query("insert into reload_test values (1) returning x;"); got != "1" {
		t.Fatalf("insert: %q", got)
	}

	// Add B by rename; it must serve promptly.
	d.rewrite("  - {name: a, listen: 0, sprite: db, port: 5432}\n  - {name: c, listen: 0, sprite: db, port: 7}\n  - {name: b, listen: 0, sprite: db, port: 7}\n")
	took := testsvc.Eventually(t, "forward b", func() bool { f, ok := d.forward("b"); return ok && len(f.Addrs) > 0 })
	echoOnce(t, d.addr("b"), 100)
	// Measured, not asserted: shared machines are noisy. (The watcher's
	// debounce and the poll are both 200 ms here.)
	t.Logf("forward b served %v after the rename", took.Round(time.Millisecond))

	// Change C in place: it is rebound with the new rule.
	oldC := d.addr("c")
	os.WriteFile(d.path, []byte(d.header+"forwards:\n  - {name: a, listen: 0, sprite: db, port: 5432}\n  - {name: c, listen: 0, sprite: db, port: 7, keep_awake: never}\n  - {name: b, listen: 0, sprite: db, port: 7}\n"), 0o600)
	testsvc.Eventually(t, "forward c rebound", func() bool {
		f, ok := d.forward("c")
		return ok && len(f.Addrs) > 0 && f.Addrs[0] != oldC
	})
	echoOnce(t, d.addr("c"), 100)

	// A's transaction, on the same connection, commits.
	io.WriteString(s.stdin, "insert into reload_test values (2);\ncommit;\n")
	if got := s.query("select count(*) from reload_test;"); got != "2" {
		t.Fatalf("after commit: count %q, want 2", got)
	}
	if got := s.query("select pg_backend_pid();"); got != pid {
		t.Fatalf("backend pid %s, was %s: the session was re-established", got, pid)
	}
	s.stdin.Close()
	if err := s.wait(); err != nil {
		t.Fatalf("psql: %v", err)
	}
	if f, _ := d.forward("a"); f.Total != 1 {
		t.Errorf("forward a counted %d connections; it was restarted", f.Total)
	}
}

func TestE2EBrokenEditKeepsServing(t *testing.T) {
	d := startDaemon(t, spritestest.Options{}, map[int]string{7: testsvc.Serve(t, testsvc.Echo)}, "",
		"  - {name: a, listen: 0, sprite: db, port: 7}\n  - {name: b, listen: 0, sprite: db, port: 7}\n")
	for _, tt := range []struct{ name, forwards, want string }{
		{"bad yaml", "  - {name: a, listen: 0, sprite: db, port: 7\n", `spritefwd.yaml:\d+:\d+: YAML syntax`},
		{"duplicate port", "  - 7001:db:7\n  - 7001:db:8\n", `spritefwd.yaml:\d+:5: listen 127.0.0.1:7001 overlaps`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := d.status().RejectedAt
			d.rewrite(tt.forwards)
			testsvc.Eventually(t, "the edit to be rejected", func() bool { return d.status().RejectedAt.After(before) })
			st := d.status()
			if len(st.Rejected) == 0 || !regexp.MustCompile(tt.want).MatchString(strings.Join(st.Rejected, "\n")) {
				t.Fatalf("status rejected = %q, want %s", st.Rejected, tt.want)
			}
			echoOnce(t, d.addr("a"), 64)
			echoOnce(t, d.addr("b"), 64)
			// spritefwd reload reports the same errors and exits 1.
			var out bytes.Buffer
			err := dispatch([]string{"reload", "--socket", d.socket}, &out, &out)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 1 || !regexp.MustCompile(tt.want).MatchString(ee.msg) {
				t.Errorf("reload: %v", err)
			}
		})
	}
}

func TestE2ERemovedForwardDrains(t *testing.T) {
	d := startDaemon(t, spritestest.Options{}, map[int]string{7: testsvc.Serve(t, testsvc.Echo)}, "shutdown_grace: 30s\n",
		"  - {name: a, listen: 0, sprite: db, port: 7}\n  - {name: gone, listen: 0, sprite: db, port: 7}\n")
	addr := d.addr("gone")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOn(t, c, 10)
	d.rewrite("  - {name: a, listen: 0, sprite: db, port: 7}\n")
	testsvc.Eventually(t, "gone to drain", func() bool {
		for _, f := range d.status().Forwards {
			if f.Name == "gone" && f.State == tunnel.StateDraining {
				return true
			}
		}
		return false
	})
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("a removed forward still accepts")
	}
	echoOn(t, c, 1000) // the open connection is still carried
	c.Close()
	testsvc.Eventually(t, "gone to finish draining", func() bool {
		for _, f := range d.status().Forwards {
			if f.Name == "gone" {
				return false
			}
		}
		return true
	})
}

func TestE2EStatusAndMetrics(t *testing.T) {
	d := startDaemon(t, spritestest.Options{Faults: spritestest.Faults{ColdProxy: spritestest.ColdFail}}, map[int]string{7: testsvc.Serve(t, testsvc.Echo)},
		"metrics_listen: 127.0.0.1:0\n", "  - {name: echo, listen: 0, sprite: db, port: 7}\n")
	metrics := func() string {
		resp, err := http.Get("http://" + d.status().MetricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	value := func(text, series string) float64 {
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, series+" ") {
				v, _ := strconv.ParseFloat(strings.TrimPrefix(line, series+" "), 64)
				return v
			}
		}
		return -1
	}
	before := metrics()
	const n = 12345
	echoOnce(t, d.addr("echo"), n)
	testsvc.Eventually(t, "the connection to close", func() bool { f, _ := d.forward("echo"); return f.Open == 0 })

	f, _ := d.forward("echo")
	if f.Total != 1 || f.BytesIn != n || f.BytesOut != n || f.Open != 0 || f.State != tunnel.StateListening ||
		f.Target != "db:7" || f.Listen != "127.0.0.1:0" || len(f.Addrs) != 1 || f.SpriteState == "" {
		t.Errorf("status fields: %+v", f)
	}
	st := d.status()
	if st.TokenSource != filepath.Join(d.dir, "token") || st.PID != os.Getpid() || st.Config != d.path || len(st.Warnings) != 0 {
		t.Errorf("status header: %+v", st)
	}
	var table bytes.Buffer
	if err := dispatch([]string{"status", "--socket", d.socket}, &table, &table); err != nil || !strings.Contains(table.String(), "12.1KiB") {
		t.Errorf("status table (%v):\n%s", err, table.String())
	}
	if strings.Contains(table.String(), e2eToken) {
		t.Error("status shows the token")
	}

	// A wake, then the metrics moved as the traffic says.
	d.sim.Sleep("db")
	echoOnce(t, d.addr("echo"), 10)
	after := metrics()
	for series, want := range map[string]float64{
		`spritefwd_connections_total{forward="echo"}`:                             2,
		`spritefwd_bytes_total{direction="in",forward="echo"}`:                    n + 10,
		`spritefwd_link_setup_seconds_count{forward="echo"}`:                      2,
		`spritefwd_wake_wait_seconds_count{sprite="db"}`:                          1,
		`spritefwd_forward_up{forward="echo",listen="127.0.0.1:0",target="db:7"}`: 1,
	} {
		if got := value(after, series); got != want {
			t.Errorf("%s = %v, want %v (before: %v)", series, got, want, value(before, series))
		}
	}
	if value(before, `spritefwd_connections_total{forward="echo"}`) != 0 {
		t.Error("connections counted before any connection")
	}
}

func TestStatusWithoutDaemonExits3(t *testing.T) {
	var out bytes.Buffer
	err := dispatch([]string{"status", "--socket", filepath.Join(t.TempDir(), "none.sock")}, &out, &out)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 3 || !strings.Contains(ee.msg, "not running") {
		t.Fatalf("status with no daemon: %v", err)
	}
}

func TestTokenFileWarning(t *testing.T) {
	d := startDaemon(t, spritestest.Options{}, map[int]string{7: testsvc.Serve(t, testsvc.Echo)}, "", "  - 0:db:7\n")
	os.Chmod(filepath.Join(d.dir, "token"), 0o644)
	os.Chmod(d.path, 0o666)
	d.r.Reload()
	st := d.status()
	joined := strings.Join(st.Warnings, "\n")
	if !strings.Contains(joined, "readable by others") || !strings.Contains(joined, "writable by others") {
		t.Errorf("warnings: %q", st.Warnings)
	}
}

// TestServiceRunStartStop drives the daemon through kardianos' Run: Start
// must return at once with forwards serving; Stop must drain within the
// grace period, with no process exit.
func TestServiceRunStartStop(t *testing.T) {
	d := startDaemon(t, spritestest.Options{}, map[int]string{7: testsvc.Serve(t, testsvc.Echo)}, "", "  - 0:db:7\n")
	d.r.Stop() // the rig's runner; the service below gets its own
	cfg, _ := config.Load(d.path)
	r := newRunner(runnerOptions{log: zerolog.Nop(), configPath: d.path, cfg: cfg, socket: filepath.Join(d.dir, "svc.sock")})
	stop := make(chan struct{})
	started := make(chan struct{})
	s, err := svc.New(svc.Options{ConfigPath: d.path, User: true, RunWait: func() { close(started); <-stop }}, r)
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run() }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return")
	}
	addr := r.d.Status()[0].Addrs[0]
	echoOnce(t, addr, 100)
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	echoOn(t, c, 10) // open during Stop: it gets shutdown_grace (1s), then is closed
	close(stop)
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Stop did not drain in time")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still listening after Stop")
	}
}
