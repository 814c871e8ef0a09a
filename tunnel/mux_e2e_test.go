package tunnel_test

// End-to-end tests of mode: mux: the real spritefwd binary deployed as the
// agent into the emulated sprite, real clients and servers on both ends.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
	"github.com/spritefwd/spritefwd/tunnel"
)

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

// agentBinary builds the agent-only spritefwd-agent once per test run: the
// agent the daemon uploads into the emulated sprite.
func agentBinary(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spritefwd-agent-")
		if err != nil {
			agentErr = err
			return
		}
		agentPath = filepath.Join(dir, "spritefwd-agent")
		out, err := exec.Command("go", "build", "-o", agentPath, "../cmd/spritefwd-agent").CombinedOutput()
		if err != nil {
			agentErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentPath
}

// startMux is startE2E with the agent binary and a free agent port (the
// emulated sprite shares this machine's network).
func startMux(t *testing.T, opts spritestest.Options, settings string, rules ...string) *e2e {
	t.Helper()
	return startMuxTuned(t, nil, opts, settings, rules...)
}

func startMuxTuned(t *testing.T, tune func(*tunnel.Options), opts spritestest.Options, settings string, rules ...string) *e2e {
	t.Helper()
	settings = fmt.Sprintf("agent_binary: %s\nagent_port: %d\n%s", agentBinary(t), testsvc.FreePort(t), settings)
	e := startE2ETuned(t, tune, opts, nil, settings, rules...)
	e.sim.CreateSprite("box")
	return e
}

// agentUp waits until status shows forward name's agent session. A new
// session's first stream rides behind the daemon's proof, so its answer
// can reach the client before the pool has recorded the session.
func (e *e2e) agentUp(t *testing.T, name string) {
	t.Helper()
	testsvc.Eventually(t, "the agent session in status", func() bool { return e.status(t, name).Agent.State == "connected" })
}

func (e *e2e) status(t *testing.T, name string) tunnel.Status {
	t.Helper()
	for _, s := range e.d.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no forward %s", name)
	return tunnel.Status{}
}

// echoTransfer sends n random bytes through addr and checks the echo by
// sha256.
func echoTransfer(addr string, n int, seed uint64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(seed, 7))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(c)
	werr := <-errc
	if werr != nil {
		return werr
	}
	if rerr != nil {
		return rerr
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		return fmt.Errorf("echo of %d bytes came back as %d bytes with another sha256", n, len(got))
	}
	return nil
}

func TestE2EMuxEcho(t *testing.T) {
	t.Parallel()
	echo := testsvc.Serve(t, testsvc.Echo)
	_, port, _ := net.SplitHostPort(echo)
	e := startMux(t, spritestest.Options{}, "", "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
	addr := "127.0.0.1:" + e.port(t, "echo")
	for i := range 5 {
		if err := echoTransfer(addr, 1<<20, uint64(i)); err != nil {
			t.Fatalf("transfer %d: %v\n%s", i, err, e.logs)
		}
	}
	st := e.status(t, "echo")
	if st.Agent == nil || st.Agent.Deploys != 1 || st.Agent.Sessions != 1 {
		t.Fatalf("status %+v, want one deploy and one session", st.Agent)
	}
	t.Logf("agent: %+v", *st.Agent)
	// The sprite has gzip, so the agent went up compressed, and was
	// unpacked where it runs.
	if !strings.Contains(e.logs.String(), `"gzip":true,"message":"agent uploaded"`) {
		t.Errorf("the agent was not uploaded compressed:\n%s", e.logs)
	}
	files := sprixec(t, e, "/tmp/spritefwd", "ls")
	if !strings.Contains(files, "spritefwd-agent-") || strings.Contains(files, ".gz") {
		t.Errorf("the agent's directory holds:\n%s", files)
	}
}

// sprixec runs cmd in dir inside sprite box and returns its stdout.
func sprixec(t *testing.T, e *e2e, dir string, cmd ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := apiClient(t, e).Exec(ctx, "box", sprites.ExecOptions{Cmd: cmd, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var out bytes.Buffer
	for {
		ev, err := sess.Next(ctx)
		if err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
		if ev.Stream == sprites.StreamStdout {
			out.Write(ev.Data)
		}
		if ev.Exited {
			return out.String()
		}
	}
}

// pgProbe measures one connection setup the way a client sees it: connect,
// send PostgreSQL's SSLRequest, read the one-byte answer.
func pgProbe(addr string) (time.Duration, error) {
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil {
		return 0, err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return 0, err
	}
	if b[0] != 'N' && b[0] != 'S' {
		return 0, fmt.Errorf("SSLRequest answered %q", b)
	}
	return time.Since(start), nil
}

// setupTimes returns n connection setups through addr, fastest first.
func setupTimes(t *testing.T, addr string, n int) []time.Duration {
	t.Helper()
	var ds []time.Duration
	for range n {
		d, err := pgProbe(addr)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds
}

// With a 100 ms round trip, a new connection through mux costs about one
// round trip (its first bytes go out with the stream's open), and through
// direct mode about two here (the upgrade, which carries the target in its
// query, then data; a real edge adds TCP and TLS handshakes).
func TestE2EMuxSetupVersusDirect(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	port := strconv.Itoa(pg.Port)
	e := startMux(t, spritestest.Options{}, "",
		"{name: direct, listen: 0, sprite: box, port: "+port+"}",
		"{name: mux, listen: 0, sprite: box, port: "+port+", mode: mux}")
	e.sim.Map("box", pg.Port, "127.0.0.1:"+port)
	direct, muxed := "127.0.0.1:"+e.port(t, "direct"), "127.0.0.1:"+e.port(t, "mux")
	// A link takes its latency when it is made: set it before the session.
	e.sim.SetFaults(spritestest.Faults{Latency: 50 * time.Millisecond, DropRate: -1})
	if _, err := pgProbe(muxed); err != nil { // deploys the agent, dials the session
		t.Fatalf("first mux connection: %v\n%s", err, e.logs)
	}
	const n = 15
	ds, ms := setupTimes(t, direct, n), setupTimes(t, muxed, n)
	rtt := 100 * time.Millisecond
	t.Logf("setup at a 100 ms round trip, median (fastest): direct %v (%v), mux %v (%v): %.1f and %.1f RTT",
		ds[n/2], ds[0], ms[n/2], ms[0], float64(ds[n/2])/float64(rtt), float64(ms[n/2])/float64(rtt))
	// The claim is a round trip saved, not a ratio, and a round trip is a
	// floor: load on a shared runner only adds to a setup, and adds more
	// to mux's, which crosses the agent too. So the fastest of each is
	// compared: a median lost half its round trip once, at 49.97 ms, with
	// two cores shared by three test binaries. Half a round trip is the
	// margin; how fast each mode is belongs to the bench.
	if saved := ds[0] - ms[0]; saved < rtt/2 {
		t.Errorf("mux's fastest setup %v saves %v on direct's %v, want at least half a round trip (expect one, %v)", ms[0], saved, ds[0], rtt)
	}

	// And pgbench -C, a real client opening a connection per transaction.
	pgbench := func(addr string) string {
		_, p, _ := net.SplitHostPort(addr)
		out, err := run(t, 3*time.Minute, "pgbench", "-C", "-c", "4", "-j", "2", "-t", "10", "-S", "-n", "-h", "127.0.0.1", "-p", p, "-U", "postgres", "postgres")
		if err != nil {
			t.Fatalf("pgbench -C: %v\n%s", err, out)
		}
		if !strings.Contains(out, "number of failed transactions: 0") {
			t.Fatalf("pgbench -C failed transactions:\n%s", out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "tps") || strings.Contains(l, "connection time") {
				return strings.TrimSpace(l)
			}
		}
		return out
	}
	if out, err := run(t, 2*time.Minute, "pgbench", "-i", "-q", "-h", pg.Dir, "-p", port, "-U", "postgres", "postgres"); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	t.Logf("pgbench -C direct: %s", pgbench(direct))
	t.Logf("pgbench -C mux:    %s", pgbench(muxed))
}

// 200 streams at once on one session, each checked by sha256, and one of
// them reset by its client halfway: the other 199 are unaffected.
func TestE2EMux200StreamsOneReset(t *testing.T) {
	echo := testsvc.Serve(t, testsvc.Echo)
	_, port, _ := net.SplitHostPort(echo)
	e := startMux(t, spritestest.Options{}, "", "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
	addr := "127.0.0.1:" + e.port(t, "echo")
	if err := echoTransfer(addr, 10, 0); err != nil { // deploy first
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 100 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				c.Write(make([]byte, 64<<10))
				io.ReadFull(c, make([]byte, 1000))
				c.(*net.TCPConn).SetLinger(0)
				c.Close() // a reset in the middle of the transfer
				return
			}
			if err := echoTransfer(addr, 256<<10, uint64(i)); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := e.status(t, "echo"); st.Agent.Sessions != 1 {
		t.Errorf("%d sessions, want 1: a stream's reset must not take the session down\n%s", st.Agent.Sessions, e.logs)
	}
}

// The agent is killed inside the sprite: the daemon notices, redeploys,
// and new connections work.
func TestE2EMuxAgentKilledIsRedeployed(t *testing.T) {
	t.Parallel()
	echo := testsvc.Serve(t, testsvc.Echo)
	_, port, _ := net.SplitHostPort(echo)
	// Every new stream finds the session quiet, so it is probed first.
	probeAlways := func(o *tunnel.Options) { o.MuxProbeAfter = time.Nanosecond }
	e := startMuxTuned(t, probeAlways, spritestest.Options{}, "", "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
	addr := "127.0.0.1:" + e.port(t, "echo")
	if err := echoTransfer(addr, 1000, 0); err != nil {
		t.Fatal(err)
	}
	killAgent(t, e)
	if err := echoTransfer(addr, 1<<20, 1); err != nil {
		t.Fatalf("after the agent was killed: %v\n%s", err, e.logs)
	}
	if st := e.status(t, "echo"); st.Agent.Deploys != 2 {
		t.Fatalf("%d deploys, want 2 (the first, and after the kill)", st.Agent.Deploys)
	}
	// Which binary is uploaded is said once per pool, not per deploy.
	if n := strings.Count(e.logs.String(), "uploading the agent-only build"); n != 1 {
		t.Errorf("the binary was named %d times in two deploys, want once", n)
	}
}

// killAgent kills the agent in the sprite with SIGKILL, as an OOM kill or a
// crash would, using the pid file it keeps.
func killAgent(t *testing.T, e *e2e) {
	t.Helper()
	b, err := apiClient(t, e).ReadFile(context.Background(), "box", "/tmp/spritefwd/agent.pid")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

func apiClient(t *testing.T, e *e2e) *sprites.Client {
	t.Helper()
	c, err := sprites.New(sprites.Options{APIURL: e.sim.URL, Token: e2eToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// The agent, reached through the API's proxy as anyone with the token
// could: a session without the deployment's secret is refused, and one with
// it still cannot reach beyond loopback.
func TestE2EMuxAgentRefusesStrangers(t *testing.T) {
	t.Parallel()
	echo := testsvc.Serve(t, testsvc.Echo)
	_, port, _ := net.SplitHostPort(echo)
	e := startMux(t, spritestest.Options{}, "", "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
	if err := echoTransfer("127.0.0.1:"+e.port(t, "echo"), 10, 0); err != nil {
		t.Fatal(err)
	}
	agentPort := e.d.Config().AgentPort
	api := apiClient(t, e)
	ctx := context.Background()
	hello := mux.Hello{Session: mux.NewSessionID(), ResumeWindow: time.Second, Buffer: mux.DefaultBuffer}

	link, err := api.Dial(ctx, "box", "localhost", agentPort)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := mux.Dial(ctx, link, mux.NewSecret(), hello, e2eLog(e)); !errors.Is(err, mux.ErrBadSecret) {
		t.Fatalf("a session with the wrong secret: %v, want ErrBadSecret", err)
	}

	secret, err := api.ReadFile(ctx, "box", "/tmp/spritefwd/secret")
	if err != nil {
		t.Fatal(err)
	}
	link, err = api.Dial(ctx, "box", "localhost", agentPort)
	if err != nil {
		t.Fatal(err)
	}
	sess, _, err := mux.Dial(ctx, link, strings.TrimSpace(string(secret)), hello, e2eLog(e))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	far, _ := net.Dial("tcp", ln.Addr().String())
	defer far.Close()
	near, _ := ln.Accept()
	st := mux.NewStream(1, near.(*net.TCPConn), mux.StreamOptions{})
	if err := sess.Open(st, "10.0.0.1", 5432); err != nil {
		t.Fatal(err)
	}
	<-st.Done()
	if err := st.Err(); !errors.Is(err, mux.ErrPeerReset) || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("a stream to 10.0.0.1: %v, want a reset saying it is not allowed", err)
	}
	if _, err := far.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("its client read %v, want ECONNRESET", err)
	}
}

func e2eLog(e *e2e) zerolog.Logger { return zerolog.New(e.logs) }

// No agent can be deployed (here: no binary for the sprite): the forward
// serves in direct mode, says why once, and shows it in status.
func TestE2EMuxFallsBackToDirect(t *testing.T) {
	echo := testsvc.Serve(t, testsvc.Echo)
	_, port, _ := net.SplitHostPort(echo)
	e := startE2E(t, spritestest.Options{}, nil, fmt.Sprintf("agent_binary: /nonexistent/spritefwd-{arch}\nagent_port: %d\n", testsvc.FreePort(t)),
		"{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
	p, _ := strconv.Atoi(port)
	e.sim.Map("box", p, echo) // reachable through the proxy, as direct mode needs
	addr := "127.0.0.1:" + e.port(t, "echo")
	for i := range 5 {
		// Request and reply, no half-close: direct mode cannot carry one.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		msg := bytes.Repeat([]byte{byte(i)}, 64<<10)
		c.Write(msg)
		got := make([]byte, len(msg))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("connection %d: %v\n%s", i, err, e.logs)
		}
		c.Close()
	}
	st := e.status(t, "echo")
	if st.Agent == nil || st.Agent.State != "fallback" || !strings.Contains(st.Agent.Fallback, "agent_binary") {
		t.Fatalf("status %+v, want fallback naming agent_binary", st.Agent)
	}
	if n := strings.Count(e.logs.String(), "agent unavailable"); n != 1 {
		t.Errorf("the fallback was logged %d times for 5 connections, want once", n)
	}
}

// exchange sends msg through addr and reads it back, without a half-close,
// which direct mode cannot carry.
func exchange(addr string, msg []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("sent %q, got %q back", msg, got)
	}
	return nil
}

// impostor holds a port in the agent's place, as any process in the sprite
// can once the agent is gone, and keeps everything it is sent.
type impostor struct {
	mu    sync.Mutex
	got   bytes.Buffer
	conns int
}

func (im *impostor) Write(p []byte) (int, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.got.Write(p)
}

// received is what the impostor was sent, and on how many connections.
func (im *impostor) received() ([]byte, int) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return bytes.Clone(im.got.Bytes()), im.conns
}

// serve accepts on ln until it closes; answer plays each connection, with
// in the connection as read (and kept).
func (im *impostor) serve(t *testing.T, ln net.Listener, answer func(c net.Conn, in io.Reader)) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			im.mu.Lock()
			im.conns++
			im.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				answer(c, io.TeeReader(c, im))
				io.Copy(im, c) // whatever comes after the answer, kept too
			}()
		}
	}()
}

// The agent is stopped and another process takes its port: one that
// answers the old hello with a zero status, or one that echoes. Neither may
// receive a client's byte; the daemon finds out in the handshake, moves
// the agent to another port, and serves the connection there.
func TestE2EMuxImpostorOnAgentPort(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		answer func(c net.Conn, in io.Reader)
		found  string // what the daemon logs it found
	}{
		{name: "version 1 hello, zero status", found: "holds it",
			answer: func(c net.Conn, in io.Reader) {
				c.Write(append([]byte("SFWD\x01"), make([]byte, 32)...))
				if _, err := io.ReadFull(in, make([]byte, 61)); err == nil {
					c.Write([]byte{0, 0, 0, 0})
				}
			}},
		{name: "echo", found: "failed the agent's proof",
			answer: func(c net.Conn, in io.Reader) { io.Copy(c, in) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			echo := testsvc.Serve(t, testsvc.Echo)
			_, port, _ := net.SplitHostPort(echo)
			e := startMux(t, spritestest.Options{}, "", "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
			p, _ := strconv.Atoi(port)
			e.sim.Map("box", p, echo) // so that direct mode would work too
			addr := "127.0.0.1:" + e.port(t, "echo")
			if err := exchange(addr, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			// Nothing may redial while the agent is swapped for the
			// impostor: no stream left to resume, no session to repair.
			testsvc.Eventually(t, "the first stream to end", func() bool { return e.status(t, "echo").Agent.Streams == 0 })
			e.sim.DropLinks("box")
			testsvc.Eventually(t, "the session to end", func() bool { return e.status(t, "echo").Agent.State != "connected" })
			agentPort := e.d.Config().AgentPort
			killAgent(t, e)
			var ln net.Listener
			testsvc.Eventually(t, "the agent's port to be free", func() bool {
				var err error
				ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(agentPort))
				return err == nil
			})
			im := &impostor{}
			im.serve(t, ln, tt.answer)
			e.sim.Map("box", agentPort, ln.Addr().String()) // the proxy reaches it as a process of the sprite's

			secret := []byte("password=hunter2\n")
			if err := exchange(addr, secret); err != nil {
				t.Fatalf("with an impostor on the agent's port: %v\n%s", err, e.logs)
			}
			if got, conns := im.received(); bytes.Contains(got, []byte("password=")) {
				t.Fatalf("the impostor received a client's bytes: %q", got)
			} else if conns == 0 {
				t.Fatalf("the impostor was never reached: the test did not test it\n%s", e.logs)
			}
			st := e.status(t, "echo").Agent
			if st.State == "fallback" {
				t.Logf("served in direct mode: %s", st.Fallback)
			} else if st.Port == agentPort || st.Deploys != 2 || !strings.Contains(st.Moved, strconv.Itoa(agentPort)) {
				t.Fatalf("status %+v, want a second deploy on another port than %d, saying why\n%s", st, agentPort, e.logs)
			}
			want := fmt.Sprintf("something on the agent port %d of sprite box %s; redeploying on port", agentPort, tt.found)
			if !strings.Contains(e.logs.String(), want) {
				t.Errorf("the log does not say %q:\n%s", want, e.logs)
			}
			// Said once per pool, not per deploy.
			if n := strings.Count(e.logs.String(), "uploading the agent-only build"); n != 1 {
				t.Errorf("the binary was named %d times, want once", n)
			}
		})
	}
}

// A redeploy while the agent runs: another deployment's secret in the
// sprite makes a new pool redeploy over the running agent. Its executable
// is in use; the redeploy must neither write over it nor fail.
func TestE2EMuxRedeployOverRunningAgent(t *testing.T) {
	t.Parallel()
	echo := testsvc.Serve(t, testsvc.Echo)
	_, port, _ := net.SplitHostPort(echo)
	e := startMux(t, spritestest.Options{}, "", "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
	addr := "127.0.0.1:" + e.port(t, "echo")
	if err := echoTransfer(addr, 1000, 0); err != nil {
		t.Fatal(err)
	}
	api := apiClient(t, e)
	ctx := context.Background()
	pidOf := func() string {
		b, err := api.ReadFile(ctx, "box", "/tmp/spritefwd/agent.pid")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	first := pidOf()
	if err := api.WriteFile(ctx, "box", "/tmp/spritefwd/secret", 0o600, strings.NewReader(mux.NewSecret()+"\n")); err != nil {
		t.Fatal(err)
	}
	cfg := *e.d.Config()
	cfg.ResumeWindow += time.Second // other agent settings: a new pool, which reads the secret
	if err := e.d.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := echoTransfer(addr, 1<<20, 1); err != nil {
		t.Fatalf("after a redeploy over the running agent: %v\n%s", err, e.logs)
	}
	e.agentUp(t, "echo")
	st := e.status(t, "echo").Agent
	if st.State != "connected" || st.Deploys != 1 {
		t.Fatalf("status %+v, want the new pool connected after its own deploy\n%s", st, e.logs)
	}
	if pidOf() == first {
		t.Fatal("the agent's pid did not change: no redeploy happened")
	}
	if !strings.Contains(e.logs.String(), "the sprite has this agent already; not uploading it") {
		t.Errorf("the same agent was uploaded again:\n%s", e.logs)
	}
}

// A new pool (as a fresh daemon has) finds the agent running: the look
// reads its secret, and the handshake follows on the link upgraded beside
// the look, with nothing deployed.
func TestE2EMuxFindsRunningAgent(t *testing.T) {
	echo := testsvc.Serve(t, testsvc.Echo)
	_, port, _ := net.SplitHostPort(echo)
	e := startMux(t, spritestest.Options{}, "", "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
	addr := "127.0.0.1:" + e.port(t, "echo")
	if err := echoTransfer(addr, 1000, 0); err != nil {
		t.Fatal(err)
	}
	pid := sprixec(t, e, "/tmp/spritefwd", "cat", "agent.pid")
	cfg := *e.d.Config()
	cfg.ResumeWindow += time.Second // other agent settings: a new pool, which knows no secret
	if err := e.d.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := echoTransfer(addr, 1<<20, 1); err != nil {
		t.Fatalf("through the running agent: %v\n%s", err, e.logs)
	}
	e.agentUp(t, "echo")
	st := e.status(t, "echo").Agent
	if st.State != "connected" || st.Deploys != 0 || st.Sessions != 1 {
		t.Fatalf("status %+v, want the new pool connected with no deploy of its own\n%s", st, e.logs)
	}
	if now := sprixec(t, e, "/tmp/spritefwd", "cat", "agent.pid"); now != pid {
		t.Fatalf("the agent's pid changed from %s to %s", pid, now)
	}
}

// A step of a deployment never answers, or never stops: the connection
// goes direct within wake_timeout and a margin, and the log names the step.
func TestE2EMuxDeployStepFaultsFallBack(t *testing.T) {
	t.Parallel()
	const wake = 2 * time.Second
	for _, tt := range []struct {
		name string
		cmd  string   // the command the fault replaces
		with []string // what runs instead
		want string   // in the log and in status
	}{
		{"the look hangs", "uname", []string{"sleep", "60"}, "look into the sprite: no answer within 2s"},
		{"the look never stops", "uname", []string{"yes", "x86_64"}, "look into the sprite: it printed more than 16384 bytes"},
		{"the look ends early", "uname", []string{"true"}, "look into the sprite: it exited with code 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			echo := testsvc.Serve(t, testsvc.Echo)
			_, port, _ := net.SplitHostPort(echo)
			e := startMux(t, spritestest.Options{}, fmt.Sprintf("wake_timeout: %s\n", wake), "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
			p, _ := strconv.Atoi(port)
			e.sim.Map("box", p, echo)
			// In front of the emulator, the fault: another command in
			// place of tt.cmd, whose exec is up and misbehaves.
			target, err := url.Parse(e.sim.URL)
			if err != nil {
				t.Fatal(err)
			}
			rp := httputil.NewSingleHostReverseProxy(target)
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// tt.cmd is the program, or a command in the script of sh -c.
				runs := func(cmd []string) bool {
					return len(cmd) > 0 && cmd[0] == tt.cmd || len(cmd) > 2 && cmd[0] == "sh" && strings.Contains(cmd[2], tt.cmd+" ")
				}
				if q := r.URL.Query(); strings.HasSuffix(r.URL.Path, "/exec") && runs(q["cmd"]) {
					q["cmd"] = tt.with
					r.URL.RawQuery = q.Encode()
				}
				rp.ServeHTTP(w, r)
			}))
			t.Cleanup(front.Close)
			cfg := *e.d.Config()
			cfg.APIURL = front.URL
			if err := e.d.Apply(&cfg); err != nil {
				t.Fatal(err)
			}

			start := time.Now()
			if err := exchange("127.0.0.1:"+e.port(t, "echo"), []byte("hello")); err != nil {
				t.Fatalf("%s: %v\n%s", tt.name, err, e.logs)
			}
			if took, limit := time.Since(start), wake+5*time.Second; took > limit {
				t.Errorf("the connection was served after %s, want within %s", took, limit)
			}
			st := e.status(t, "echo").Agent
			if st.State != "fallback" || !strings.Contains(st.Fallback, tt.want) {
				t.Fatalf("status %+v, want fallback saying %q", st, tt.want)
			}
			if !regexp.MustCompile(regexp.QuoteMeta(tt.want) + `.*agent unavailable`).MatchString(e.logs.String()) {
				t.Errorf("the log does not say the agent is unavailable, and why, naming the step:\n%s", e.logs)
			}
		})
	}
}
