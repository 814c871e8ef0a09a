package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
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

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/control"
	"github.com/spritefwd/spritefwd/internal/testsvc"
)

var (
	out       = flag.String("out", "", "write results as JSON to this file; empty skips the benchmark")
	gib       = flag.Int64("bytes", 1<<30, "bytes per throughput measurement")
	idleConns = flag.Int("idle", 10000, "concurrent idle connections to hold (capped by the open-file limit)")
	only      = flag.String("only", "", "run only these sections, comma-separated: throughput, setup, wan, pgbench, idle; for bench-wan: wan-setup, wan-mux-first, wan-mux-quiet, wan-throughput, wan-window, wan-memory, wan-apps, wan-resume")
)

func want(section string) bool {
	return *only == "" || strings.Contains(","+*only+",", ","+section+",")
}

// result is one row of the report.
type result struct {
	Name  string             `json:"name"`
	Value map[string]float64 `json:"values"`
	Note  string             `json:"note,omitempty"`
}

type env struct {
	t        *testing.T
	dir      string
	bin      string
	sinkAddr string
	echoAddr string
	socat    string // first hop of the two-hop socat chain to the sink
	socatE   string // the same chain to the echo server
	socatPID []int
	simURL   string
	token    string // the emulators', made by the first in tokenFile()
	daemon   *exec.Cmd
	socket   string
	fwd      map[string]string
	// fileLimit caps the idle test: every process in the chain (harness,
	// daemon, emulator, echo server) holds two descriptors per connection.
	fileLimit uint64
}

// procCPU is user+system CPU of pid and its reaped children, in seconds.
func procCPU(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	total := 0.0
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, _ := strconv.ParseFloat(f[i], 64)
		total += v
	}
	return total / 100 // clock ticks; USER_HZ is 100 on Linux
}

// The bench re-runs its own binary as helper processes, named by
// SPRITEFWD_BENCH_ROLE: "echo" serves testsvc.Echo; "relay NETWORK ADDR"
// is one hop of the Go relay chain, which copies each connection to ADDR
// and back with nothing else: the floor for two Go processes in a path.
func TestMain(m *testing.M) {
	if role := strings.Fields(os.Getenv("SPRITEFWD_BENCH_ROLE")); len(role) > 0 {
		raiseFileLimit()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			os.Exit(1)
		}
		fmt.Println(ln.Addr())
		for {
			c, err := ln.Accept()
			if err != nil {
				// EMFILE and friends pass; the harness kills us when done.
				fmt.Fprintln(os.Stderr, "bench helper:", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if role[0] == "echo" {
				go func() { defer c.Close(); testsvc.Echo(c) }()
			} else {
				go relayHop(c, role[1], role[2])
			}
		}
	}
	os.Exit(m.Run())
}

func relayHop(c net.Conn, network, addr string) {
	defer c.Close()
	up, err := net.Dial(network, addr)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.(interface{ CloseWrite() error }).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// helper starts this binary in a role (see TestMain) and returns the
// address it listens on.
func (e *env) helper(role string) string {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SPRITEFWD_BENCH_ROLE="+role)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	return strings.TrimSpace(line)
}

func (e *env) echoProcess() string { return e.helper("echo") }

// goRelayChain starts hops Go relay processes in a chain to target, and
// returns the first one's address.
func (e *env) goRelayChain(hops int, network, target string) string {
	addr := e.helper("relay " + network + " " + target)
	for range hops - 1 {
		addr = e.helper("relay tcp " + addr)
	}
	return addr
}

// hasChildren reports whether any of pids has a child process.
func hasChildren(pids []int) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
		ppid, _ := strconv.Atoi(f[1])
		for _, p := range pids {
			if ppid == p {
				return true
			}
		}
	}
	return false
}

func serveTCP(t *testing.T, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return ln.Addr().String()
}

// sink reads a length and that many bytes, then acknowledges one byte.
func sink(c net.Conn) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint64(hdr[:]))); err != nil {
		return
	}
	c.Write([]byte{1})
}

func push(addr string, size int64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	c.Write(hdr[:])
	buf := make([]byte, 256<<10)
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf[:min(int64(len(buf)), size-sent)]); err != nil {
			return err
		}
	}
	_, err = io.ReadFull(c, hdr[:1])
	return err
}

// socatChain starts two socat relays, hop1 → hop2 → target.
func (e *env) socatChain(target string) string {
	hop2 := e.socatListen("TCP:" + target + ",nodelay")
	return e.socatListen("TCP:" + hop2 + ",nodelay")
}

// socatListen runs a forking socat relay to dest on a free port. This
// socat cannot take a listener from us (no ACCEPT-FD before 1.8), so it
// gets a random port outside the ephemeral range; if the port is taken,
// socat exits at once and another is tried. Nothing is guessed silently.
func (e *env) socatListen(dest string) string {
	for range 50 {
		port := 20000 + mrand.IntN(10000)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command("socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr,nodelay", port), dest)
		if err := cmd.Start(); err != nil {
			e.t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		up := false
		for start := time.Now(); time.Since(start) < 2*time.Second && !up; time.Sleep(10 * time.Millisecond) {
			select {
			case <-exited:
			default:
				if c, err := net.Dial("tcp", addr); err == nil {
					c.Close()
					up = true
				}
				continue
			}
			break
		}
		select {
		case <-exited:
			continue // bind failed: try another port
		default:
		}
		if !up {
			cmd.Process.Kill()
			<-exited
			continue
		}
		e.socatPID = append(e.socatPID, cmd.Process.Pid)
		e.t.Cleanup(func() { cmd.Process.Kill(); <-exited })
		return addr
	}
	e.t.Fatal("socat could not bind any port")
	return ""
}

func (e *env) status() control.Status {
	c := control.NewClient(e.socket)
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *env) setLatency(d time.Duration) {
	body := fmt.Sprintf(`{"latency":%q}`, d.String())
	cmd := exec.Command("curl", "-sf", "-X", "POST", "-H", "Authorization: Bearer "+e.token, "-d", body, e.simURL+"/_sim/faults")
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("set latency: %v %s", err, out)
	}
}

func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	want := uint64(200000)
	if lim.Max < want {
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}) == nil {
			return want
		}
	}
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// newEnv builds spritefwd and its agent into a fresh directory.
func newEnv(t *testing.T) *env {
	limit := raiseFileLimit()
	e := &env{t: t, dir: t.TempDir(), fwd: map[string]string{}, fileLimit: limit}
	e.bin = filepath.Join(e.dir, "spritefwd")
	// The daemon finds spritefwd-agent next to itself and uploads it. Both
	// are built as make build builds them: the agent's upload is part of
	// what a first mux connection costs, and without -s -w it is half as
	// large again.
	for pkg, dst := range map[string]string{"../cmd/spritefwd": e.bin, "../cmd/spritefwd-agent": filepath.Join(e.dir, "spritefwd-agent")} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", dst, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	return e
}

func setup(t *testing.T) *env {
	testsvc.Need(t, "socat", "curl")
	e := newEnv(t)
	e.sinkAddr = serveTCP(t, sink)
	e.echoAddr = e.echoProcess() // its own process: 10k connections need their own fds
	e.socat = e.socatChain(e.sinkAddr)
	e.socatE = e.socatChain(e.echoAddr)

	e.simURL = e.startSim("--map", "s:9="+e.sinkAddr, "--map", "s:7="+e.echoAddr)
	// Mux forwards name the servers' real ports: the agent runs in the
	// emulated sprite, which shares this machine's network.
	_, sinkPort, _ := net.SplitHostPort(e.sinkAddr)
	_, echoPort, _ := net.SplitHostPort(e.echoAddr)
	e.socket = filepath.Join(e.dir, "ctl.sock")
	e.daemon, e.fwd = e.startDaemon("bench", e.simURL, fmt.Sprintf(`half_close_timeout: 1s
agent_port: %d
forwards:
  - {name: sink, listen: 0, sprite: s, port: 9, max_connections: 100000}
  - {name: echo, listen: 0, sprite: s, port: 7, max_connections: 100000}
  - {name: msink, listen: 0, sprite: s, port: %s, mode: mux, max_connections: 100000}
  - {name: mecho, listen: 0, sprite: s, port: %s, mode: mux, max_connections: 100000}
`, testsvc.FreePort(t), sinkPort, echoPort))
	return e
}

// tokenFile holds the emulators' token. The first sim makes a random one
// there and the others read it: exec runs commands on this machine, so no
// fixed token while the bench runs, and none on a command line.
func (e *env) tokenFile() string { return filepath.Join(e.dir, "token") }

// startSim runs an emulator with the bench's token and args, and returns
// its URL; it stops with the test.
func (e *env) startSim(args ...string) string {
	sim := exec.Command(e.bin, append([]string{"sim", "--listen", "127.0.0.1:0", "--token-file", e.tokenFile(), "--idle-sleep", "-1s", "--log-level", "warn"}, args...)...)
	stdout, _ := sim.StdoutPipe()
	if err := sim.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { sim.Process.Kill(); sim.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if e.token == "" {
		tok, err := os.ReadFile(e.tokenFile())
		if err != nil {
			e.t.Fatalf("sim made no token file: %v", err)
		}
		e.token = strings.TrimSpace(string(tok))
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "spritefwd sim: serving "))
}

// startDaemon runs a daemon named name against the emulator at url, with
// config (after api_url and token_file), and returns it with the address
// of each forward once all listen. Its control socket is name.sock in the
// bench's directory; it stops with the test.
func (e *env) startDaemon(name, url, config string) (*exec.Cmd, map[string]string) {
	cfg := filepath.Join(e.dir, name+".yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("api_url: %s\ntoken_file: %s\n%s", url, e.tokenFile(), config)), 0o600)
	sock := filepath.Join(e.dir, name+".sock")
	if name == "bench" {
		sock = e.socket
	}
	d := exec.Command(e.bin, "run", "--config", cfg, "--socket", sock, "--allow-root", "--log-level", "warn", "--no-watch", "--log-format", "json")
	d.Stderr = os.Stderr
	// What daemons learn (the agent's record, auto-forward's ports) stays
	// in the run's directory: a record left by an earlier run must not
	// change what this one measures. A restarted daemon shares it.
	d.Env = append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(e.dir, "state"))
	if err := d.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { d.Process.Signal(syscall.SIGTERM); d.Wait() })
	want := strings.Count(config, "name:")
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		c := control.NewClient(sock)
		st, err := c.Status(context.Background())
		c.Close()
		if err == nil && len(st.Forwards) == want && listening(st) {
			addrs := map[string]string{}
			for _, f := range st.Forwards {
				addrs[f.Name] = f.Addrs[0]
			}
			return d, addrs
		}
		if time.Since(start) > 20*time.Second {
			e.t.Fatalf("daemon %s did not start", name)
		}
	}
}

func listening(st control.Status) bool {
	for _, f := range st.Forwards {
		if len(f.Addrs) == 0 {
			return false
		}
	}
	return true
}

func gbps(bytes int64, d time.Duration) float64 { return float64(bytes) * 8 / 1e9 / d.Seconds() }

func (e *env) throughput(streams int) result {
	per := *gib / int64(streams)
	run := func(addr string, pids []int) (float64, float64) {
		cpu0 := 0.0
		for _, p := range pids {
			cpu0 += procCPU(p)
		}
		start := time.Now()
		var wg sync.WaitGroup
		for range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := push(addr, per); err != nil {
					e.t.Error(err)
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		// socat forks a child per connection; its CPU reaches the parent's
		// cutime only once the child is reaped.
		for deadline := time.Now().Add(5 * time.Second); hasChildren(pids) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		cpu := -cpu0
		for _, p := range pids {
			cpu += procCPU(p)
		}
		return gbps(per*int64(streams), took), cpu / (float64(per*int64(streams)) / (1 << 30))
	}
	direct, _ := run(e.sinkAddr, nil)
	socat, socatCPU := run(e.socat, e.socatPID)
	tunnel, daemonCPU := run(e.fwd["sink"], []int{e.daemon.Process.Pid})
	muxed, muxCPU := run(e.fwd["msink"], []int{e.daemon.Process.Pid})
	return result{
		Name: fmt.Sprintf("throughput, %d stream(s), %d MiB", streams, *gib>>20),
		Value: map[string]float64{
			"direct_gbps": direct, "socat_gbps": socat, "spritefwd_gbps": tunnel,
			"spritefwd_vs_direct": tunnel / direct, "spritefwd_vs_socat": tunnel / socat,
			"daemon_cpu_s_per_gib": daemonCPU, "socat_cpu_s_per_gib": socatCPU, "daemon_cpu_vs_socat": daemonCPU / socatCPU,
			"mux_gbps": muxed, "mux_vs_socat": muxed / socat, "mux_daemon_cpu_s_per_gib": muxCPU, "mux_daemon_cpu_vs_socat": muxCPU / socatCPU,
		},
		Note: "mux adds the agent as a third hop inside the emulated sprite (its CPU is not counted)",
	}
}

// smallMessages compares one stream's upload through a daemon whose sprite
// reads 1,024-byte messages (as the in-sprite server of November 2025 does)
// with the same through the main daemon, whose sprite takes large ones;
// both daemons run the default config and learn the limit themselves.
func (e *env) smallMessages() result {
	url := e.startSim("--max-message", "1024", "--map", "s:9="+e.sinkAddr)
	_, sinkPort, _ := net.SplitHostPort(e.sinkAddr)
	d, fwd := e.startDaemon("small", url, fmt.Sprintf("agent_port: %d\nforwards:\n  - {name: sink, listen: 0, sprite: s, port: 9}\n  - {name: msink, listen: 0, sprite: s, port: %s, mode: mux}\n",
		testsvc.FreePort(e.t), sinkPort))
	per := *gib / 4
	paths := map[string]string{"large": e.fwd["sink"], "small": fwd["sink"], "mux_large": e.fwd["msink"], "mux_small": fwd["msink"]}
	pids := map[string]int{"large": e.daemon.Process.Pid, "small": d.Process.Pid, "mux_large": e.daemon.Process.Pid, "mux_small": d.Process.Pid}
	gb, cpu := map[string][]float64{}, map[string][]float64{}
	interleaved(e.t, []string{"large", "small", "mux_large", "mux_small"}, func(p string) error {
		cpu0 := procCPU(pids[p])
		start := time.Now()
		if err := push(paths[p], per); err != nil {
			return err
		}
		gb[p] = append(gb[p], gbps(per, time.Since(start)))
		cpu[p] = append(cpu[p], (procCPU(pids[p])-cpu0)/(float64(per)/(1<<30)))
		return nil
	})
	v := map[string]float64{}
	for p := range paths {
		v[p+"_gbps"], v[p+"_cpu_s_per_gib"] = median(gb[p]), median(cpu[p]) // the daemon's CPU
	}
	v["small_vs_large"] = v["small_gbps"] / v["large_gbps"]
	v["mux_small_vs_large"] = v["mux_small_gbps"] / v["mux_large_gbps"]
	return result{
		Name:  fmt.Sprintf("one stream's upload at a 1,024-byte and a large message limit, %d MiB", per>>20),
		Value: v,
		Note:  fmt.Sprintf("median of %d alternating runs; small: the emulator reads at most 1,024 bytes per message and the daemon learns it", rounds),
	}
}

// setupTimes appends n samples of connect → first echoed byte to ds.
func setupTimes(ds []time.Duration, addr string, n int) ([]time.Duration, error) {
	for range n {
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return ds, err
		}
		c.Write([]byte{1})
		_, err = io.ReadFull(c, make([]byte, 1))
		ds = append(ds, time.Since(start))
		c.Close()
		if err != nil {
			return ds, err
		}
	}
	return ds, nil
}

// roundTrips appends n samples of a one-byte echo on one open connection:
// the cost of the hops themselves, which every connection's setup pays at
// least once.
func roundTrips(ds []time.Duration, addr string, n int) ([]time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return ds, err
	}
	defer c.Close()
	b := make([]byte, 1)
	for range n {
		start := time.Now()
		c.Write(b)
		if _, err := io.ReadFull(c, b); err != nil {
			return ds, err
		}
		ds = append(ds, time.Since(start))
	}
	return ds, nil
}

// percentile returns the p-th percentile (0 < p < 1) of ds, sorting it.
func percentile(ds []time.Duration, p float64) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[int(float64(len(ds))*p)]
}

// rounds is how many times each side-by-side measurement alternates its
// paths. The machine's speed drifts by tens of percent within minutes, so
// a reference measured in one block and spritefwd in the next can differ
// by the drift alone; alternating spreads it over every path.
const rounds = 3

// interleaved runs measure for each path, rounds times over, alternating.
func interleaved(t *testing.T, paths []string, measure func(path string) error) {
	for range rounds {
		for _, p := range paths {
			if err := measure(p); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
		}
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func (e *env) setup() []result {
	// Mux has a third process in its path, the agent: gorelay3 is its floor.
	addrs := map[string]string{"direct": e.echoAddr, "socat": e.socatE, "gorelay": e.goRelayChain(2, "tcp", e.echoAddr),
		"gorelay3": e.goRelayChain(3, "tcp", e.echoAddr), "spritefwd": e.fwd["echo"], "mux": e.fwd["mecho"]}
	paths := []string{"direct", "socat", "gorelay", "gorelay3", "spritefwd", "mux"}
	setups, echoes := map[string][]time.Duration{}, map[string][]time.Duration{}
	interleaved(e.t, paths, func(p string) (err error) {
		setups[p], err = setupTimes(setups[p], addrs[p], 100)
		return err
	})
	interleaved(e.t, paths, func(p string) (err error) {
		echoes[p], err = roundTrips(echoes[p], addrs[p], 2000)
		return err
	})
	st, rt := map[string]float64{}, map[string]float64{}
	for _, p := range paths {
		st[p+"_p50_us"] = us(percentile(setups[p], 0.5))
		st[p+"_p99_us"] = us(percentile(setups[p], 0.99))
		rt[p+"_p50_us"] = us(percentile(echoes[p], 0.5))
	}
	st["spritefwd_added_p50_us"] = st["spritefwd_p50_us"] - st["direct_p50_us"]
	st["mux_added_p50_us"] = st["mux_p50_us"] - st["direct_p50_us"]
	st["gorelay_added_p50_us"] = st["gorelay_p50_us"] - st["direct_p50_us"]
	st["gorelay3_added_p50_us"] = st["gorelay3_p50_us"] - st["direct_p50_us"]
	rows := []result{{
		Name:  "connection setup, connect to first echoed byte, latency 0",
		Value: st,
		Note:  fmt.Sprintf("%d rounds of 100 connections per path, alternating; gorelay is two Go processes that only copy bytes, the floor for a two-process path here (daemon, emulator); gorelay3 is three, as mux has (daemon, emulator, agent)", rounds),
	}, {
		Name:  "round trip of one byte on an open connection, latency 0",
		Value: rt,
		Note:  "each hop is a process to wake; a new connection's first echo pays this once, on top of its setup",
	}}
	const oneWay = 50 * time.Millisecond
	e.setLatency(oneWay)
	defer e.setLatency(0)
	e.dropLinks() // a link takes its latency when made: the mux session redials
	setupTimes(nil, e.fwd["mecho"], 1)
	wan, err := setupTimes(nil, e.fwd["echo"], 20)
	if err != nil {
		e.t.Fatal(err)
	}
	mwan, err := setupTimes(nil, e.fwd["mecho"], 20)
	if err != nil {
		e.t.Fatal(err)
	}
	l50, l99 := percentile(wan, 0.5), percentile(wan, 0.99)
	ml50, ml99 := percentile(mwan, 0.5), percentile(mwan, 0.99)
	rtt := 2 * oneWay
	rows = append(rows, result{
		Name: "connection setup with --latency 50ms (100 ms round trip)",
		Value: map[string]float64{
			"spritefwd_p50_ms": float64(l50) / 1e6, "spritefwd_p99_ms": float64(l99) / 1e6,
			"round_trips_p50": float64(l50) / float64(rtt), "round_trips_p99": float64(l99) / float64(rtt),
			"mux_p50_ms": float64(ml50) / 1e6, "mux_round_trips_p50": float64(ml50) / float64(rtt), "mux_round_trips_p99": float64(ml99) / float64(rtt),
		},
		Note: "the emulator charges the upgrade (which carries the target in its query) and the echo one round trip each; the TCP and TLS handshakes of a real WAN come on top. Mux pays only the echo",
	})
	return rows
}

func (e *env) dropLinks() {
	cmd := exec.Command("curl", "-sf", "-X", "POST", "-H", "Authorization: Bearer "+e.token, e.simURL+"/_sim/sprites/s/drop-links")
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("drop links: %v %s", err, out)
	}
}

// wan measures one stream at a 100 ms round trip. Through mux, a stream
// has at most its window unacknowledged, which grows from 256 KiB with
// what the link delivers, up to resume_buffer: a ceiling of 64 MiB per
// round trip (5.4 Gbit/s at 100 ms) by default.
func (e *env) wan() result {
	const oneWay = 50 * time.Millisecond
	const size = 256 << 20
	e.setLatency(oneWay)
	defer e.setLatency(0)
	e.dropLinks()
	setupTimes(nil, e.fwd["mecho"], 1)
	measure := func(addr string) float64 {
		start := time.Now()
		if err := push(addr, size); err != nil {
			e.t.Error(err)
			return 0
		}
		return gbps(size, time.Since(start))
	}
	muxed := measure(e.fwd["msink"])
	direct := measure(e.fwd["sink"])
	limit := float64(config.DefaultResumeBuffer) * 8 / 1e9 / (2 * oneWay).Seconds()
	return result{
		Name: "one stream at a 100 ms round trip, 256 MiB",
		Value: map[string]float64{
			"mux_gbps": muxed, "direct_mode_gbps": direct, "mux_limit_gbps": limit,
			"mux_fraction_of_limit": muxed / limit, "mux_vs_direct_mode": muxed / direct,
		},
		Note: "mux's limit is resume_buffer (64 MiB) per round trip, which its window grows toward from 256 KiB. Direct mode has no window of its own here: the emulator's delay line buffers without bound",
	}
}

func (e *env) idle(forward string) result {
	n := *idleConns
	note := ""
	// A direct-mode connection holds two descriptors in the daemon (client
	// and link) and two in the emulator; a mux one holds one in the daemon
	// and one in the agent, all sharing a single link. 2,000 stay spare for
	// the pools and the listeners.
	perConn := 2
	if forward == "mecho" {
		perConn = 1
	}
	if most := int(e.fileLimit-2000) / perConn; n > most {
		note = fmt.Sprintf("asked for %d; this machine's open-file limit (%d, not raisable here) holds a process to about %d connections at %d descriptors each", n, e.fileLimit, most, perConn)
		n = most
	}
	// The previous section's connections may still be winding down.
	before := e.status()
	for i := 0; i < 50; i++ {
		time.Sleep(200 * time.Millisecond)
		now := e.status()
		if now.Goroutines >= before.Goroutines-10 {
			break
		}
		before = now
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	sem := make(chan struct{}, 256)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed int
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.Dial("tcp", e.fwd[forward])
			if err == nil {
				c.SetDeadline(time.Now().Add(60 * time.Second))
				c.Write([]byte{1})
				_, err = io.ReadFull(c, make([]byte, 1))
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if c != nil {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	time.Sleep(2 * time.Second) // let the daemon settle
	held := e.status()
	// All of them still echo.
	echoed := 0
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write([]byte{2}); err == nil {
			if _, err := io.ReadFull(c, make([]byte, 1)); err == nil {
				echoed++
			}
		}
	}
	open := float64(len(conns))
	return result{
		Name: fmt.Sprintf("%d concurrent idle connections through one forward (%s)", n, forward),
		Value: map[string]float64{
			"held": open, "failed_to_open": float64(failed), "still_echo": float64(echoed),
			"daemon_rss_mib_before": float64(before.RSSBytes) / (1 << 20), "daemon_rss_mib_held": float64(held.RSSBytes) / (1 << 20),
			"rss_kib_per_conn":    float64(held.RSSBytes-before.RSSBytes) / 1024 / open,
			"goroutines_per_conn": float64(held.Goroutines-before.Goroutines) / open,
			// No heap figure: status reports the live heap as of the last
			// GC, which an idle daemon may have run before the last
			// connection opened (one run showed -1.1 KiB per connection).
		},
		Note: note,
	}
}

var tps = regexp.MustCompile(`tps = ([0-9.]+)`)

func (e *env) pgbench() []result {
	pg := testsvc.StartPostgres(e.t)
	if out, err := testsvc.Command(context.Background(), e.t, "pgbench", "-i", "-q", "-h", pg.Dir, "-p", strconv.Itoa(pg.Port), "-U", "postgres", "postgres").CombinedOutput(); err != nil {
		e.t.Fatalf("pgbench -i: %v %s", err, out)
	}
	// pgbench needs TCP for the direct run too: a socat hop of one, so the
	// direct side is TCP like the tunnel (and slightly pessimistic).
	direct := e.socatChainUnix(pg.Socket)
	twoHop := e.socatListen("TCP:" + direct + ",nodelay") // the same two relays a tunnel has
	goTwoHop := e.goRelayChain(2, "unix", pg.Socket)
	url := e.startSim("--map", "db:5432=unix:"+pg.Socket)
	_, fwd := e.startDaemon("pg", url, fmt.Sprintf("agent_port: %d\nforwards:\n  - {name: pg, listen: 0, sprite: db, port: 5432}\n  - {name: pgmux, listen: 0, sprite: db, port: %d, mode: mux}\n",
		testsvc.FreePort(e.t), pg.Port))
	tunnel, muxed := fwd["pg"], fwd["pgmux"]
	run := func(addr string, extra ...string) float64 {
		_, port, _ := net.SplitHostPort(addr)
		args := append([]string{"-c", "8", "-j", "2", "-T", "5", "-S", "-n", "-h", "127.0.0.1", "-p", port, "-U", "postgres"}, extra...)
		out, err := testsvc.Command(context.Background(), e.t, "pgbench", append(args, "postgres")...).CombinedOutput()
		if err != nil {
			e.t.Errorf("pgbench: %v\n%s", err, out)
		}
		m := tps.FindSubmatch(out)
		if m == nil {
			return 0
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	var rows []result
	for _, mode := range []struct {
		name  string
		extra []string
	}{{"pgbench -c 8 -S", nil}, {"pgbench -c 8 -S -C (a connection per transaction)", []string{"-C"}}} {
		addrs := map[string]string{"direct": direct, "socat": twoHop, "gorelay": goTwoHop, "spritefwd": tunnel, "mux": muxed}
		runs := map[string][]float64{}
		interleaved(e.t, []string{"direct", "socat", "gorelay", "spritefwd", "mux"}, func(p string) error {
			runs[p] = append(runs[p], run(addrs[p], mode.extra...))
			return nil
		})
		dt, st, tt, mt := median(runs["direct"]), median(runs["socat"]), median(runs["spritefwd"]), median(runs["mux"])
		gt := median(runs["gorelay"])
		rows = append(rows, result{Name: mode.name, Value: map[string]float64{"direct_tps": dt, "spritefwd_tps": tt, "spritefwd_vs_direct": tt / dt,
			"socat_tps": st, "socat_vs_direct": st / dt, "spritefwd_vs_socat": tt / st,
			"mux_tps": mt, "mux_vs_direct": mt / dt, "mux_vs_socat": mt / st,
			"gorelay_tps": gt, "gorelay_vs_direct": gt / dt, "spritefwd_vs_gorelay": tt / gt},
			Note: fmt.Sprintf("median of %d 5-second runs per path, alternating; direct is one socat hop to PostgreSQL's Unix socket, socat is two, gorelay two Go relays; mux reaches its TCP port through the agent", rounds)})
	}
	return rows
}

func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

func (e *env) socatChainUnix(path string) string {
	return e.socatListen("UNIX-CONNECT:" + path)
}

func TestBench(t *testing.T) {
	if *out == "" {
		t.Skip("bench: pass -out FILE (make bench)")
	}
	e := setup(t)
	var rows []result
	if want("throughput") {
		rows = append(rows, e.throughput(1), e.throughput(8), e.smallMessages())
	}
	if want("setup") {
		rows = append(rows, e.setup()...)
	}
	if want("wan") {
		rows = append(rows, e.wan())
	}
	if want("pgbench") {
		rows = append(rows, e.pgbench()...) // before the idle tests churn through ephemeral ports
	}
	if want("idle") {
		rows = append(rows, e.idle("mecho"), e.idle("echo")) // mux first, on a daemon that has not grown
	}

	writeReport(t, "spritefwd benchmarks", rows)
}

// writeReport prints rows under title and writes them as JSON to -out.
func writeReport(t *testing.T, title string, rows []result) {
	fmt.Printf("\n%s (%s, %d cores), all references from this run\n", title, time.Now().Format(time.DateOnly), numCPU())
	for _, r := range rows {
		fmt.Printf("\n%s\n", r.Name)
		keys := make([]string, 0, len(r.Value))
		for k := range r.Value {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Printf("  %-26s %12.3f\n", k, r.Value[k])
		}
		if r.Note != "" {
			fmt.Printf("  (%s)\n", r.Note)
		}
	}
	data, _ := json.MarshalIndent(map[string]any{"date": time.Now().UTC(), "results": rows}, "", "  ")
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\nwrote %s\n", *out)
}

func numCPU() int {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(data), "processor\t:")
}

// payloadFile writes size random bytes, the same for a seed, to a file
// for scp to carry, and returns its path and sha256.
func payloadFile(t *testing.T, size int, seed byte) (string, [32]byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "payload")
	data := make([]byte, size)
	mrand.NewChaCha8([32]byte{seed}).Read(data)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return src, sha256.Sum256(data)
}
