package soak

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/control"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

var duration = flag.Duration("duration", 0, "how long to soak; 0 skips the soak")

const token = "org/1/tok/soak-secret"

// outcome counters for bulk transfers.
type tally struct {
	attempted, completed, reset, refused, corrupt, truncated atomic.Int64
}

// faultLog records when faults were injected, to tell an injected cause
// from an unexplained failure.
type faultLog struct {
	mu     sync.Mutex
	events []fault
}

type fault struct {
	at     time.Time
	sprite string // "" for faults that touch every sprite
	kind   string
}

func (f *faultLog) add(sprite, kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, fault{time.Now(), sprite, kind})
}

// during reports whether a link-breaking fault hit sprite in [from, to].
func (f *faultLog) during(sprite string, from, to time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.events {
		if (e.sprite == sprite || e.sprite == "") && !e.at.Before(from.Add(-time.Second)) && !e.at.After(to) {
			return true
		}
	}
	return false
}

func (f *faultLog) counts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[string]int{}
	for _, e := range f.events {
		m[e.kind]++
	}
	return m
}

type soak struct {
	t       *testing.T
	dir     string
	cfgPath string
	header  string
	base    string // the forwards the config returns to after chaos
	socket  string
	sim     *spritestest.Server
	faults  faultLog
	bulk    tally
}

func (s *soak) writeConfig(forwards string) {
	tmp := s.cfgPath + ".new"
	os.WriteFile(tmp, []byte(s.header+"forwards:\n"+forwards), 0o600)
	os.Rename(tmp, s.cfgPath)
}

const baseForwards = "  - {name: pg, listen: 0, sprite: db, port: 5432}\n" +
	"  - {name: bulk-a, listen: 0, sprite: bulk, port: 9}\n" +
	"  - {name: bulk-b, listen: 0, sprite: bulk2, port: 9}\n"

const churnForward = "  - {name: churn, listen: 0, sprite: bulk, port: 9}\n"

func (s *soak) status() (control.Status, error) {
	c := control.NewClient(s.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Status(ctx)
}

func (s *soak) collectGarbage() error {
	c := control.NewClient(s.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.CollectGarbage(ctx)
}

func (s *soak) addrs() map[string]string {
	st, err := s.status()
	out := map[string]string{}
	if err != nil {
		return out
	}
	for _, f := range st.Forwards {
		if f.State == "listening" && len(f.Addrs) > 0 {
			out[f.Name] = f.Addrs[0]
		}
	}
	return out
}

// transfer sends size random bytes through addr to an echo server and
// checks what comes back. The only acceptable failures are honest ones: an
// error (reset) after a correct prefix, or a refused connection.
func (s *soak) transfer(addr string, size int) {
	s.bulk.attempted.Add(1)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		s.bulk.refused.Add(1)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	data := make([]byte, size)
	rand.Read(data)
	// Linux reports a reset to one syscall only: if the writer's write
	// takes the ECONNRESET (or EPIPE), the reader's next read sees EOF. So
	// an EOF is honest when the writer was reset.
	var werr error
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for off := 0; off < len(data); off += 64 << 10 {
			if _, err := c.Write(data[off:min(off+64<<10, len(data))]); err != nil {
				werr = err
				return
			}
		}
	}()
	got := make([]byte, 0, size)
	buf := make([]byte, 64<<10)
	for len(got) < size {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if !bytes.Equal(got, data[:min(len(got), size)]) {
			s.bulk.corrupt.Add(1)
			s.t.Errorf("CORRUPT: %d bytes through %s differ from what was sent", len(got), addr)
			return
		}
		if err == io.EOF {
			<-wrote
			if errors.Is(werr, syscall.ECONNRESET) || errors.Is(werr, syscall.EPIPE) {
				s.bulk.reset.Add(1) // the writer took the reset
				return
			}
			s.bulk.truncated.Add(1)
			s.t.Errorf("TRUNCATED: clean EOF after %d of %d bytes through %s (local port %s) at %s", len(got), size, addr, c.LocalAddr(), time.Now().Format("15:04:05.000"))
			return
		}
		if err != nil {
			s.bulk.reset.Add(1)
			return
		}
	}
	s.bulk.completed.Add(1)
}

type pgRound struct {
	ok, faulted, unexplained int
	txns                     int64
	lastErr                  string
}

var processed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)

func TestSoak(t *testing.T) {
	if *duration == 0 {
		t.Skip("soak: pass -duration (make soak DURATION=10m)")
	}
	testsvc.Need(t, "pgbench", "psql")
	dir := t.TempDir()
	bin := filepath.Join(dir, "spritefwd")
	agentBin := filepath.Join(dir, "spritefwd-agent")
	for pkg, dst := range map[string]string{"../cmd/spritefwd": bin, "../cmd/spritefwd-agent": agentBin} {
		if out, err := exec.Command("go", "build", "-o", dst, pkg).CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	pg := testsvc.StartPostgres(t)
	if out, err := testsvc.Command(context.Background(), t, "pgbench", "-i", "-q", "-h", pg.Dir, "-p", strconv.Itoa(pg.Port), "-U", "postgres", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	s := &soak{t: t, dir: dir, cfgPath: filepath.Join(dir, "spritefwd.yaml"), socket: filepath.Join(dir, "ctl.sock")}
	simLogf, _ := os.Create(filepath.Join(os.TempDir(), "spritefwd-soak-sim.log"))
	defer simLogf.Close()
	simLog := zerolog.New(simLogf).With().Timestamp().Logger()
	s.sim = spritestest.NewServer(spritestest.Options{Logger: &simLog, Token: token, IdleSleep: 5 * time.Second, WakeDelay: 700 * time.Millisecond, MaxWait: 5 * time.Second})
	defer s.sim.Close()
	s.sim.Map("db", 5432, "unix:"+pg.Socket)
	s.sim.Map("bulk", 9, echo.Addr().String())
	s.sim.Map("bulk2", 9, echo.Addr().String())
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(token), 0o600)
	s.header = fmt.Sprintf("api_url: %s\ntoken_file: %s\nkeepalive: 2s\nwake_timeout: 30s\nshutdown_grace: 3s\nhalf_close_timeout: 2s\nagent_binary: %s\nagent_port: %d\n",
		s.sim.URL, tokenFile, agentBin, testsvc.FreePort(t))
	// A mux forward too: its transfers must survive drops and sleeps, or
	// end in an honest reset; never corrupt, never truncated. Its port is
	// the echo server's real one (the emulated sprite shares this network).
	s.base = baseForwards + fmt.Sprintf("  - {name: bulk-mux, listen: 0, sprite: mbulk, port: %d, mode: mux}\n", echo.Addr().(*net.TCPAddr).Port)
	s.sim.CreateSprite("mbulk")
	s.writeConfig(s.base)

	logPath := filepath.Join(dir, "daemon.log")
	logf, _ := os.Create(logPath)
	daemon := exec.Command(bin, "run", "--config", s.cfgPath, "--socket", s.socket, "--allow-root", "--log-format", "json")
	daemon.Stdout, daemon.Stderr = logf, logf
	// What the daemon learns (the agent's record) stays with this run.
	daemon.Env = append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(dir, "state"))
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	defer func() {
		daemon.Process.Kill()
		logf.Close()
	}()
	for start := time.Now(); len(s.addrs()) < 4; time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatal("daemon did not come up")
		}
	}
	idleStart, _ := s.status()

	ctx, stop := context.WithTimeout(context.Background(), *duration)
	defer stop()
	var wg sync.WaitGroup

	// Bulk transfers through whichever bulk forwards exist right now.
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(uint64(w), 42))
			for ctx.Err() == nil {
				addrs := s.addrs()
				names := []string{"bulk-a", "bulk-b", "churn", "bulk-mux"}
				addr, ok := addrs[names[r.IntN(len(names))]]
				if !ok {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				s.transfer(addr, 64<<10+r.IntN(4<<20))
			}
		}()
	}

	// pgbench in short rounds; each round's errors are blamed on a fault
	// only if one hit the db sprite during that round.
	var rounds pgRound
	var pgMu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			port := s.addrs()["pg"]
			_, p, _ := net.SplitHostPort(port)
			from := time.Now()
			out, err := testsvc.Command(context.Background(), t, "pgbench", "-c", "4", "-j", "2", "-T", "4", "-S", "-n",
				"-h", "127.0.0.1", "-p", p, "-U", "postgres", "postgres").CombinedOutput()
			to := time.Now()
			pgMu.Lock()
			if m := processed.FindSubmatch(out); m != nil {
				n, _ := strconv.ParseInt(string(m[1]), 10, 64)
				rounds.txns += n
			}
			failed := err != nil || bytes.Contains(out, []byte("aborted")) || !regexp.MustCompile(`number of failed transactions: 0 `).Match(out)
			switch {
			case !failed:
				rounds.ok++
			case s.faults.during("db", from, to):
				rounds.faulted++
			default:
				rounds.unexplained++
				rounds.lastErr = lastLines(string(out), 3)
			}
			pgMu.Unlock()
		}
	}()

	// The chaos driver.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := mrand.New(mrand.NewPCG(7, 7))
		sprites := []string{"db", "bulk", "bulk2", "mbulk"}
		churn := false
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(1000+r.IntN(2000)) * time.Millisecond):
			}
			sp := sprites[r.IntN(len(sprites))]
			restore := func() {
				if churn {
					s.writeConfig(s.base + churnForward)
				} else {
					s.writeConfig(s.base)
				}
			}
			switch r.IntN(6) {
			case 0:
				s.faults.add(sp, "sleep")
				s.sim.Sleep(sp)
			case 1:
				s.faults.add(sp, "drop-links")
				s.sim.DropLinks(sp)
			case 2:
				mode := []spritestest.ColdProxy{spritestest.ColdBlock, spritestest.ColdFail, spritestest.ColdDrop}[r.IntN(3)]
				s.faults.add("-", "cold-proxy "+string(mode))
				s.sim.SetFaults(spritestest.Faults{ColdProxy: mode, Latency: -1, DropRate: -1})
			case 3:
				s.faults.add("-", "latency spike")
				s.sim.SetFaults(spritestest.Faults{Latency: 50 * time.Millisecond, DropRate: -1})
				time.Sleep(2 * time.Second)
				s.sim.SetFaults(spritestest.Faults{Latency: 0, DropRate: -1})
			case 4:
				churn = !churn
				s.faults.add("-", "config add/remove forward")
				restore()
			case 5:
				bad := []struct{ kind, forwards string }{
					{"config broken", "  - {name: broken, listen: 0, sprite: db\n"},
					{"config duplicate port", "  - 7999:db:1\n  - 7999:db:2\n"},
				}[r.IntN(2)]
				s.faults.add("-", bad.kind)
				s.writeConfig(s.base + bad.forwards)
				time.Sleep(time.Second) // the broken file stays this long: reloads in between must reject it
				restore()
			}
		}
	}()
	wg.Wait()
	s.sim.SetFaults(spritestest.Faults{ColdProxy: spritestest.ColdBlock, Latency: 0, DropRate: -1})

	// Let connections drain, then read the daemon's resources once idle.
	var idleEnd control.Status
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		idleEnd, err = s.status()
		open := int64(0)
		for _, f := range idleEnd.Forwards {
			open += f.Open + f.Lingering
		}
		if err == nil && open == 0 || time.Since(start) > 30*time.Second {
			break
		}
	}
	// The live heap is what the last GC found, and the last one ran under
	// the traffic: it still counts the traffic's buffers, and a leak could
	// hide among them. So collect twice while the daemon is idle: pooled
	// buffers survive the first collection (sync.Pool keeps a victim
	// generation) and are gone after the second, leaving what lives:
	// about what the daemon held before the traffic.
	heapBound := 2*idleStart.HeapBytes + 16<<20
	for range 2 {
		if err := s.collectGarbage(); err != nil {
			t.Fatalf("collecting the idle daemon's garbage: %v", err)
		}
	}
	if idleEnd, err = s.status(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		t.Fatalf("the daemon exited during the soak: %v", err)
	default:
	}
	daemon.Process.Signal(syscall.SIGTERM)
	var exitErr error
	select {
	case exitErr = <-exited:
	case <-time.After(30 * time.Second):
		t.Error("daemon did not stop within 30s of SIGTERM")
	}
	logData, _ := os.ReadFile(logPath)
	panics := bytes.Count(logData, []byte("panic:"))

	fmt.Printf("\nsoak: %v against the emulator, faults injected: %v\n", *duration, s.faults.counts())
	fmt.Printf("  bulk transfers: attempted %d, completed with a correct checksum %d, reset honestly %d, refused %d, corrupt %d, silently truncated %d\n",
		s.bulk.attempted.Load(), s.bulk.completed.Load(), s.bulk.reset.Load(), s.bulk.refused.Load(), s.bulk.corrupt.Load(), s.bulk.truncated.Load())
	fmt.Printf("  pgbench rounds: clean %d, failed under an injected fault %d, failed without one %d; %d transactions\n",
		rounds.ok, rounds.faulted, rounds.unexplained, rounds.txns)
	fmt.Printf("  daemon idle at start: %d goroutines, %.1f MiB RSS, %.1f MiB heap; idle at end: %d goroutines, %.1f MiB RSS, %.1f MiB heap\n",
		idleStart.Goroutines, mib(idleStart.RSSBytes), mib(int64(idleStart.HeapBytes)), idleEnd.Goroutines, mib(idleEnd.RSSBytes), mib(int64(idleEnd.HeapBytes)))
	fmt.Printf("  panics: %d; exit after SIGTERM: %v\n\n", panics, exitErr)

	if s.bulk.corrupt.Load() != 0 || s.bulk.truncated.Load() != 0 {
		t.Error("data was corrupted or silently truncated")
	}
	if t.Failed() {
		keep := filepath.Join(os.TempDir(), "spritefwd-soak-daemon.log")
		os.WriteFile(keep, logData, 0o600)
		t.Logf("daemon log kept at %s", keep)
	}
	if s.bulk.completed.Load() == 0 || rounds.ok == 0 {
		t.Error("the soak completed no work")
	}
	if rounds.unexplained != 0 {
		t.Errorf("%d pgbench rounds failed with no injected fault; last:\n%s", rounds.unexplained, rounds.lastErr)
	}
	if panics != 0 || exitErr != nil {
		t.Errorf("panics %d, exit %v", panics, exitErr)
	}
	// A leak grows with the work done; these bounds do not.
	if idleEnd.Goroutines > idleStart.Goroutines+20 {
		t.Errorf("goroutines grew from %d to %d", idleStart.Goroutines, idleEnd.Goroutines)
	}
	if idleEnd.HeapBytes > heapBound {
		t.Errorf("live heap grew from %.1f to %.1f MiB", mib(int64(idleStart.HeapBytes)), mib(int64(idleEnd.HeapBytes)))
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
