package tunnel_test

// End-to-end tests of resumption in mux mode: streams that outlive their
// link, and the honest resets when they cannot.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
	"github.com/spritefwd/spritefwd/tunnel"
)

// dropEvery cuts the sprite's links every period until the test ends.
func dropEvery(t *testing.T, e *e2e, period time.Duration) *atomic.Int64 {
	var n atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(period):
				e.sim.DropLinks("box")
				n.Add(1)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return &n
}

// scp of 256 MiB to a real sshd while the link is cut every 2 s: the file
// arrives intact, and the ssh session is never re-established.
func TestE2EResumeScpThroughDrops(t *testing.T) {
	t.Parallel()
	sshd := testsvc.StartSSHD(t)
	_, port, _ := net.SplitHostPort(sshd.Addr)
	e := startMux(t, spritestest.Options{}, "", "{name: ssh, listen: 0, sprite: box, port: "+port+", mode: mux}")
	local := e.port(t, "ssh")
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.bin"), filepath.Join(dir, "dst.bin")
	f, _ := os.Create(src)
	io.CopyN(f, rand.Reader, 256<<20)
	f.Close()
	drops := dropEvery(t, e, 2*time.Second)
	start := time.Now()
	args := append(sshd.SSHArgs("-P", "127.0.0.1", local), "-q", src, sshd.User+"@127.0.0.1:"+dst)
	if out, err := run(t, 5*time.Minute, "scp", args...); err != nil {
		t.Fatalf("scp: %v\n%s\n%s", err, out, e.logs)
	}
	if sha256File(t, src) != sha256File(t, dst) {
		t.Fatal("the file arrived corrupted")
	}
	st := e.status(t, "ssh")
	t.Logf("256 MiB in %v through %d link drops; %d resumptions, latest took %v; %d sessions",
		time.Since(start).Round(time.Millisecond), drops.Load(), st.Resumptions, st.ResumeTimes, st.Agent.Sessions)
	if drops.Load() == 0 || st.Resumptions == 0 {
		t.Fatalf("%d drops and %d resumptions: the test did not test resumption", drops.Load(), st.Resumptions)
	}
	if st.Total != 1 {
		t.Errorf("%d connections: scp reconnected", st.Total)
	}
}

// A psql session runs a query before, during and after three drops: the
// same backend answers every time.
func TestE2EResumePsqlSessionSurvivesDrops(t *testing.T) {
	t.Parallel()
	pg := testsvc.StartPostgres(t)
	e := startMux(t, spritestest.Options{}, "", "{name: db, listen: 0, sprite: box, port: "+strconv.Itoa(pg.Port)+", mode: mux}")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := testsvc.Command(ctx, t, "psql", "-X", "-At", "-h", "127.0.0.1", "-p", e.port(t, "db"), "-U", "postgres", "-d", "postgres")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	query := func(sql string) string {
		t.Helper()
		fmt.Fprintln(stdin, sql)
		if !lines.Scan() {
			t.Fatalf("psql ended after %q: %v\n%s", sql, lines.Err(), e.logs)
		}
		return lines.Text()
	}
	pid := query("select pg_backend_pid();")
	for i := range 3 {
		e.sim.DropLinks("box")
		// During: the query goes out while the link is down or coming back.
		if got := query("select pg_backend_pid();"); got != pid {
			t.Fatalf("after drop %d the backend is %s, was %s: the session was re-established", i+1, got, pid)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if got := query("select 'after', pg_backend_pid();"); got != "after|"+pid {
		t.Fatalf("after the drops: %q", got)
	}
	st := e.status(t, "db")
	if st.Resumptions < 3 {
		t.Errorf("%d resumptions for 3 drops", st.Resumptions)
	}
	t.Logf("backend %s kept through 3 drops; resumptions took %v", pid, st.ResumeTimes)
}

// An outage longer than resume_window ends the streams with a reset, and
// the forward serves new connections once the network is back.
func TestE2EResumeOutageLongerThanWindow(t *testing.T) {
	t.Parallel()
	echo := testsvc.Serve(t, testsvc.Echo)
	_, port, _ := net.SplitHostPort(echo)
	e := startMux(t, spritestest.Options{}, "resume_window: 2s\nwake_timeout: 30s\n", "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
	addr := "127.0.0.1:" + e.port(t, "echo")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	e.sim.SetOffline(true)
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after an outage longer than the window, read %v; want ECONNRESET", err)
	}
	t.Logf("reset %v into the outage (resume_window 2s)", time.Since(start).Round(time.Millisecond))
	e.sim.SetOffline(false)
	if err := echoTransfer(addr, 64<<10, 1); err != nil {
		b, _ := apiClient(t, e).ReadFile(context.Background(), "box", "/tmp/spritefwd/agent.log")
		t.Fatalf("after the outage: %v\n%s\nagent:\n%s", err, e.logs, b)
	}
}

// Clients that keep writing while the link is down fill their replay
// buffers and are then held (the daemon stops reading them), so memory
// stays bounded; when the window expires, they are reset.
func TestE2EResumeWritersHeldWhileDownThenReset(t *testing.T) {
	echo := testsvc.Serve(t, testsvc.Echo)
	_, port, _ := net.SplitHostPort(echo)
	e := startMux(t, spritestest.Options{}, "resume_window: 3s\nresume_buffer: 256KiB\nwake_timeout: 30s\n", "{name: writers, listen: 0, sprite: box, port: "+port+", mode: mux}")
	addr := "127.0.0.1:" + e.port(t, "writers")
	const clients = 8
	conns := make([]net.Conn, clients)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// The echo proves the stream is open on the agent.
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e.sim.SetOffline(true)
	var wg sync.WaitGroup
	written := make([]int, clients)
	chunk := make([]byte, 64<<10)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			for written[i] < 64<<20 {
				n, err := c.Write(chunk)
				written[i] += n
				if err != nil {
					return
				}
			}
		}()
	}
	var peak, peakInuse uint64
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		for range 20 {
			// Live heap only: what the buffers hold, not garbage that a
			// loaded machine has not collected yet.
			var m runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			peakInuse = max(peakInuse, m.HeapInuse)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	wg.Wait()
	<-sampling
	grew := int64(peak) - int64(before.HeapAlloc)
	t.Logf("while down: clients wrote %v bytes each before blocking (the rest waits in their sockets); live heap grew %d KiB (in-use spans %d KiB)", written, grew>>10, (int64(peakInuse)-int64(before.HeapInuse))>>10)
	for i, n := range written {
		if n >= 64<<20 {
			t.Errorf("client %d wrote all 64 MiB into a link that was down", i)
		}
	}
	// The heap is the whole test process's, the emulator's included, and
	// what the emulator holds at the cut depends on how far the machine let
	// it read: run alone this grows by about 2.5 MiB, in full runs of the
	// package at load 9 to 15 by 14 and 20 MiB. Unbounded buffers would
	// hold the 64 MiB each client tries to write, 512 MiB in all: the
	// slack is far from that.
	if limit := int64(clients*(256+64)<<10 + 32<<20); grew > limit {
		t.Errorf("heap grew %d bytes while down, over %d: the buffers are not bounded", grew, limit)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client %d after the window: %v, want ECONNRESET", i, err)
		}
	}
	e.sim.SetOffline(false)
	if st := e.status(t, "writers"); !strings.Contains(st.LastError, "resume_window") {
		t.Errorf("last error %q, want it to name resume_window", st.LastError)
	}
}

// A session that died without a word while it was quiet (a laptop that
// slept, a NAT that forgot it) takes the next connection at once, as a
// live one would; the probe behind the stream's open finds it dead, and
// the stream goes on over a new session. ssh's first bytes reach sshd
// once (a repeat would break its key exchange), and 4 MiB through it
// arrive intact.
func TestE2EMuxQuietSessionDiedUnseen(t *testing.T) {
	sshd := testsvc.StartSSHD(t)
	_, port, _ := net.SplitHostPort(sshd.Addr)
	// Every connection finds the session quiet, and opens before its probe.
	probeAlways := func(o *tunnel.Options) { o.MuxProbeAfter = time.Nanosecond }
	e := startMuxTuned(t, probeAlways, spritestest.Options{}, "", "{name: ssh, listen: 0, sprite: box, port: "+port+", mode: mux}")
	local := e.port(t, "ssh")
	ssh := func(stdin []byte, cmd string) (string, error) {
		args := append(sshd.SSHArgs("-p", "127.0.0.1", local), sshd.User+"@127.0.0.1", cmd)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := testsvc.Command(ctx, t, "ssh", args...)
		c.Stdin = bytes.NewReader(stdin)
		out, err := c.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := ssh(nil, "echo up"); err != nil || out != "up" {
		t.Fatalf("ssh before: %v %q\n%s", err, out, e.logs)
	}
	// The session is quiet once that connection has ended (it lingers
	// until the agent's side closes), and then dies.
	testsvc.Eventually(t, "the first connection ends", func() bool {
		st := e.status(t, "ssh")
		return st.Open == 0 && st.Agent.Streams == 0
	})
	e.sim.Blackhole("box")
	data := make([]byte, 4<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	out, err := ssh(data, "sha256sum")
	if err != nil {
		t.Fatalf("ssh on the dead session: %v %q\n%s", err, out, e.logs)
	}
	if got, want := strings.Fields(out + " ")[0], hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("sshd read %s, want %s", got, want)
	}
	st := e.status(t, "ssh")
	if st.Agent.Sessions != 2 || st.Resumptions != 1 || st.Total != 2 {
		t.Errorf("%d sessions, %d resumptions, %d connections; want 2, 1, 2 (the second connection carried over once)\n%s",
			st.Agent.Sessions, st.Resumptions, st.Total, e.logs)
	}
}
