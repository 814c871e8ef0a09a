package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/sprites"
)

// muxRig is a wanRig whose daemon has extra settings, and which knows
// where its agent listens, so that the bench can walk a session's setup
// step by step beside the daemon (floor).
type muxRig struct {
	*wanRig
	agentPort int
	agentDir  string
}

func (e *env) muxRig(name string, rtt time.Duration, bitsPerSec int64, maps []string, settings, forwards string) *muxRig {
	r := &wanRig{e: e, caFile: filepath.Join(e.dir, name+"-ca.pem"), socket: filepath.Join(e.dir, name+".sock")}
	args := []string{"--tls", "--tls-ca-out", r.caFile}
	for _, m := range maps {
		args = append(args, "--map", m)
	}
	r.simURL = e.startSim(args...)
	r.shaper = newShaper(e.t, strings.TrimPrefix(r.simURL, "https://"))
	r.shaper.set(rtt, 0, bitsPerSec)
	m := &muxRig{wanRig: r, agentPort: testsvc.FreePort(e.t), agentDir: filepath.Join(e.dir, "agent-"+name)}
	_, r.fwd = e.startDaemon(name, "https://"+r.shaper.addr, fmt.Sprintf("ca_file: %s\nagent_port: %d\nagent_dir: %s\n%sforwards:%s",
		r.caFile, m.agentPort, m.agentDir, settings, forwards))
	return m
}

// simPost calls one of the emulator's controls, straight (not shaped).
func (r *muxRig) simPost(path string) {
	pool, err := config.LoadCA(r.caFile)
	if err != nil {
		r.e.t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, r.simURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+r.e.token)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		r.e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		r.e.t.Fatalf("%s: %s", path, resp.Status)
	}
}

// floorSteps are the times of what a new agent session costs, each step
// on its own through the shaper: a TCP connection and TLS handshake to the
// API, the proxy upgrade (with the target in its query, "connected" comes
// right behind the 101), the agent hello, and one frame each way on the
// new session, which is what a stream's open or resume exchange costs.
// The TCP handshake itself is not delayed by the shaper; callers add one
// round trip for it.
type floorSteps struct{ tls, upgrade, hello, frame time.Duration }

func (f floorSteps) total() time.Duration { return f.tls + f.upgrade + f.hello + f.frame }

// floor measures floorSteps n times and returns each step's median.
func (r *muxRig) floor(n int) floorSteps {
	t := r.e.t
	pool, err := config.LoadCA(r.caFile)
	if err != nil {
		t.Fatal(err)
	}
	api := "https://" + r.shaper.addr
	u, _ := url.Parse(r.simURL)
	straight, err := sprites.New(sprites.Options{APIURL: r.simURL, Token: r.e.token, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := straight.ReadFile(context.Background(), "s", filepath.Join(r.agentDir, "secret"))
	straight.Close()
	if err != nil {
		t.Fatalf("the agent's secret: %v", err)
	}
	var tlss, links, hellos, frames []time.Duration
	for range n {
		start := time.Now()
		c, err := tls.Dial("tcp", r.shaper.addr, &tls.Config{RootCAs: pool, ServerName: u.Hostname()})
		if err != nil {
			t.Fatal(err)
		}
		tlss = append(tlss, time.Since(start))
		c.Close()

		// A client per sample: no TLS session to resume, as after a cut
		// the daemon's own may not have one either (both cost one round
		// trip in TLS 1.3).
		api, err := sprites.New(sprites.Options{APIURL: api, Token: r.e.token, RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		link, err := api.Dial(context.Background(), "s", "localhost", r.agentPort)
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, time.Since(start))
		start = time.Now()
		sess, _, err := mux.Dial(context.Background(), link, strings.TrimSpace(string(secret)),
			mux.Hello{Session: mux.NewSessionID(), ResumeWindow: time.Second, Buffer: mux.DefaultBuffer}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		hellos = append(hellos, time.Since(start))
		rtt, err := sess.Ping(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, rtt)
		sess.Close()
		api.Close()
	}
	f := floorSteps{tls: percentile(tlss, 0.5), hello: percentile(hellos, 0.5), frame: percentile(frames, 0.5)}
	f.upgrade = max(percentile(links, 0.5)-f.tls, 0)
	return f
}

// wanMuxSetup measures a new mux connection's connect → first echoed byte
// when the agent session exists and has been quiet for a while (it was
// probed before the stream could open), and when the session was closed
// by mux_idle_timeout and must be made again, against that session's
// floor measured step by step.
func (e *env) wanMuxSetup(rtt time.Duration) result {
	_, echoPort, _ := net.SplitHostPort(e.echoAddr)
	fwd := fmt.Sprintf("\n  - {name: mecho, listen: 0, sprite: s, port: %s, mode: mux}\n", echoPort)
	maps := []string{"s:7=" + e.echoAddr}
	v := map[string]float64{"rtt_ms": float64(rtt.Milliseconds())}
	rt := func(ds []time.Duration, p float64) float64 { return float64(percentile(ds, p)) / float64(rtt) }

	r := e.muxRig(fmt.Sprintf("muxquiet-%v", rtt), rtt, 0, maps, "mux_idle_timeout: 12s\n", fwd)
	if _, err := setupTimes(nil, r.fwd["mecho"], 1); err != nil { // deploys the agent
		e.t.Fatal(err)
	}
	for _, q := range []struct {
		name  string
		quiet time.Duration
		n     int
	}{{"active", 0, 6}, {"quiet_2500ms", 2500 * time.Millisecond, 6}, {"quiet_10s", 10 * time.Second, 3}} {
		before := r.handshakes()
		var ds []time.Duration
		for range q.n {
			time.Sleep(q.quiet)
			var err error
			if ds, err = setupTimes(ds, r.fwd["mecho"], 1); err != nil {
				e.t.Fatal(err)
			}
		}
		after := r.handshakes()
		v[q.name+"_rt_p50"] = rt(ds, 0.5)
		v[q.name+"_rt_max"] = rt(ds, 0.999)
		v[q.name+"_tcp_conns"] = float64(after.Full+after.Resumed-before.Full-before.Resumed-1) / float64(q.n)
	}

	r = e.muxRig(fmt.Sprintf("muxnew-%v", rtt), rtt, 0, maps, "mux_idle_timeout: 500ms\n", fwd)
	if _, err := setupTimes(nil, r.fwd["mecho"], 1); err != nil {
		e.t.Fatal(err)
	}
	const n = 5
	before := r.handshakes()
	var ds []time.Duration
	for range n {
		// Until the session has closed: idle timeout, and a margin.
		time.Sleep(1500 * time.Millisecond)
		var err error
		if ds, err = setupTimes(ds, r.fwd["mecho"], 1); err != nil {
			e.t.Fatal(err)
		}
	}
	after := r.handshakes()
	v["new_session_rt_p50"] = rt(ds, 0.5)
	v["new_session_rt_max"] = rt(ds, 0.999)
	v["new_session_tcp_conns"] = float64(after.Full+after.Resumed-before.Full-before.Resumed-1) / n
	f := r.floor(3)
	v["floor_tls_rt"] = float64(f.tls) / float64(rtt)
	v["floor_upgrade_rt"] = float64(f.upgrade) / float64(rtt)
	v["floor_hello_rt"] = float64(f.hello) / float64(rtt)
	// The stream's open and first bytes ride behind the daemon's proof:
	// a frame each way is what they cost on their own before they did.
	v["floor_stream_rt"] = float64(f.frame) / float64(rtt)
	v["floor_rt"] = float64(f.tls+f.upgrade+f.hello) / float64(rtt)
	return result{
		Name:  fmt.Sprintf("a new mux connection, connect to first echoed byte, %v round trip, in round trips", rtt),
		Value: v,
		Note: "active: back to back on a session in use; quiet_*: the session existed but was quiet that long (a probe is due; mux_idle_timeout 12s here); " +
			"*_tcp_conns: new TCP connections to the API per client connection; " +
			"new_session: mux_idle_timeout (500ms here) had closed the session, so TLS, upgrade and hello are paid, the stream riding behind the daemon's proof; " +
			"floor_*: those steps measured one by one beside the daemon (a fresh TLS session each), floor_stream_rt being a frame each way, what the stream cost on its own before; TCP handshakes are not delayed by the shaper: add one round trip per TCP connection",
	}
}

// hole is a toxic that drops every byte and withholds the close, as a
// path does while a laptop sleeps: neither end hears anything. Removing it
// (shaper.set) ends the connections it held.
type hole struct{}

func (*hole) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				<-stub.Interrupt
				return
			}
		}
	}
}

func (*hole) Cleanup(stub *toxics.ToxicStub) { stub.Close() }

// blackhole makes the shaper a hole until the next set.
func (s *shaper) blackhole() {
	toxics.Register("hole", new(hole))
	s.proxy.Toxics.ResetToxics(context.Background())
	s.add("upstream", "hole", map[string]any{})
	s.add("downstream", "hole", map[string]any{})
}

// typist is an interactive ssh session through a forward: it types a byte
// every 20 ms into cat on the far side and notes when each echo arrives.
type typist struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	stop  chan struct{}
	done  chan struct{} // closed when ssh has exited, with its error in err
	err   error
	mu    sync.Mutex
	echo  []time.Time
}

func startTypist(t *testing.T, sshd *testsvc.SSHD, addr string) *typist {
	_, port, _ := net.SplitHostPort(addr)
	args := append(sshd.SSHArgs("-p", "127.0.0.1", port), "-T", sshd.User+"@127.0.0.1", "cat")
	ty := &typist{cmd: exec.Command("ssh", args...), stop: make(chan struct{}), done: make(chan struct{})}
	ty.stdin, _ = ty.cmd.StdinPipe()
	stdout, _ := ty.cmd.StdoutPipe()
	ty.cmd.Stderr = os.Stderr
	if err := ty.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ty.cmd.Process.Kill(); <-ty.done })
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ty.stop:
				ty.stdin.Close()
				return
			case <-tick.C:
				if _, err := ty.stdin.Write([]byte{'k'}); err != nil {
					return
				}
			}
		}
	}()
	go func() {
		br := bufio.NewReader(stdout)
		for {
			if _, err := br.ReadByte(); err != nil {
				ty.err = ty.cmd.Wait()
				close(ty.done)
				return
			}
			ty.mu.Lock()
			ty.echo = append(ty.echo, time.Now())
			ty.mu.Unlock()
		}
	}()
	return ty
}

// firstAfter is when the first echo after at arrived, waiting up to wait.
func (ty *typist) firstAfter(at time.Time, wait time.Duration) (time.Duration, bool) {
	for end := time.Now().Add(wait); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		ty.mu.Lock()
		i := sort.Search(len(ty.echo), func(i int) bool { return ty.echo[i].After(at) })
		var got time.Time
		if i < len(ty.echo) {
			got = ty.echo[i]
		}
		ty.mu.Unlock()
		if !got.IsZero() {
			return got.Sub(at), true
		}
		select {
		case <-ty.done:
			return 0, false
		default:
		}
	}
	return 0, false
}

// backAfter is how long after at the echoes came back from the stall
// that began there: the end of the first gap of more than 100 ms (5
// keystrokes) after at. An echo already on its way at at does not count.
func (ty *typist) backAfter(at time.Time, wait time.Duration) (time.Duration, bool) {
	for end := time.Now().Add(wait); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		ty.mu.Lock()
		for i := 1; i < len(ty.echo); i++ {
			if ty.echo[i].After(at) && ty.echo[i].Sub(ty.echo[i-1]) > 100*time.Millisecond {
				d := ty.echo[i].Sub(at)
				ty.mu.Unlock()
				return d, true
			}
		}
		ty.mu.Unlock()
		select {
		case <-ty.done:
			return 0, false
		default:
		}
	}
	return 0, false
}

// alive waits for echoes to flow (a session that is up).
func (ty *typist) alive(t *testing.T) {
	if _, ok := ty.firstAfter(time.Now(), 30*time.Second); !ok {
		t.Fatal("the interactive ssh session does not echo")
	}
}

// end stops typing and waits for ssh; its error, if it failed.
func (ty *typist) end() error {
	close(ty.stop)
	select {
	case <-ty.done:
		return ty.err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("ssh did not end")
	}
}

// wanResume cuts the link under an interactive ssh session and under an
// scp of 256 MiB at rtt, and puts the laptop to sleep under ssh sessions
// for less and more than resume_window, through a mux forward.
func (e *env) wanResume(rtt time.Duration, bitsPerSec int64) []result {
	t := e.t
	sshd := testsvc.StartSSHD(t)
	_, sshPort, _ := net.SplitHostPort(sshd.Addr)
	const window = 15 * time.Second
	r := e.muxRig("resume", rtt, bitsPerSec, []string{"s:22=" + sshd.Addr},
		fmt.Sprintf("resume_window: %s\n", window), fmt.Sprintf("\n  - {name: mssh, listen: 0, sprite: s, port: %s, mode: mux}\n", sshPort))
	addr := r.fwd["mssh"]
	if c, err := net.Dial("tcp", addr); err != nil { // deploys the agent
		t.Fatal(err)
	} else {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		_, err = io.ReadFull(c, make([]byte, 4))
		c.Close()
		if err != nil {
			t.Fatalf("the agent's first connection: %v", err)
		}
	}
	f := r.floor(3)
	rts := func(d time.Duration) float64 { return float64(d) / float64(rtt) }
	floor := map[string]float64{"rtt_ms": float64(rtt.Milliseconds()), "rate_mbit": float64(bitsPerSec) / 1e6,
		"floor_tls_rt": rts(f.tls), "floor_upgrade_rt": rts(f.upgrade), "floor_hello_rt": rts(f.hello), "floor_resume_rt": rts(f.frame),
		"floor_rt": rts(f.total())}
	with := func(m map[string]float64) map[string]float64 {
		for k, v := range floor {
			m[k] = v
		}
		return m
	}
	resumptions := func() (int64, time.Duration) {
		st := r.forward("mssh")
		var last time.Duration
		if n := len(st.ResumeTimes); n > 0 {
			last = st.ResumeTimes[n-1]
		}
		return st.Resumptions, last
	}
	var rows []result

	// An interactive session, the link cut under it.
	ty := startTypist(t, sshd, addr)
	ty.alive(t)
	time.Sleep(time.Second)
	n0, _ := resumptions()
	cut := time.Now()
	r.shaper.cut()
	pause, ok := ty.backAfter(cut, 60*time.Second)
	if !ok {
		t.Fatal("the interactive ssh session did not come back after the cut")
	}
	time.Sleep(time.Second)
	if err := ty.end(); err != nil {
		t.Fatalf("ssh after the cut: %v", err)
	}
	n1, took := resumptions()
	rows = append(rows, result{
		Name: fmt.Sprintf("link cut under an interactive ssh session, mux, %v round trip: the pause, in round trips", rtt),
		Value: with(map[string]float64{"pause_rt": rts(pause), "pause_ms": float64(pause.Milliseconds()),
			"daemon_resume_rt": rts(took), "resumptions": float64(n1 - n0)}),
		Note: "pause: from the cut to the first echo after the stall it caused (ssh types a byte every 20 ms into cat); daemon_resume: the daemon's own detach-to-attach time from status; " +
			"floor_*: a new session's steps measured one by one beside the daemon (TLS, upgrade, hello, one frame each way as the resume exchange); add one round trip for the TCP handshake, which the shaper does not delay",
	})

	// scp of 256 MiB, the link cut in the middle.
	const size = 256 << 20
	src, want := payloadFile(t, size, 2)
	dst := filepath.Join(t.TempDir(), "copy")
	_, port, _ := net.SplitHostPort(addr)
	type sample struct {
		at   time.Time
		size int64
	}
	var samples []sample
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var last int64 = -1
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if fi, err := os.Stat(dst); err == nil && fi.Size() != last {
				last = fi.Size()
				samples = append(samples, sample{time.Now(), last})
			}
		}
	}()
	n0, _ = resumptions()
	start := time.Now()
	scpDone := make(chan error, 1)
	go func() {
		args := append(sshd.SSHArgs("-P", "127.0.0.1", port), "-q", src, sshd.User+"@127.0.0.1:"+dst)
		out, err := exec.Command("scp", args...).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		scpDone <- err
	}()
	// The middle: half of the file is across.
	for {
		if fi, err := os.Stat(dst); err == nil && fi.Size() >= size/2 {
			break
		}
		if time.Since(start) > 5*time.Minute {
			t.Fatal("scp: half the file not across in 5 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cut = time.Now()
	r.shaper.cut()
	if err := <-scpDone; err != nil {
		t.Fatalf("scp through the cut: %v", err)
	}
	took = time.Since(start)
	close(stopWatch)
	<-watched
	got, err := os.ReadFile(dst)
	if err != nil || sha256.Sum256(got) != want {
		t.Fatalf("scp through the cut: the copy differs (%v)", err)
	}
	got = nil
	// The pause is the longest time the file did not grow, from the cut on.
	var stall, stallEnd time.Duration
	for i := 1; i < len(samples); i++ {
		if samples[i].at.Before(cut) {
			continue
		}
		from := samples[i-1].at
		if from.Before(cut) {
			from = cut
		}
		if gap := samples[i].at.Sub(from); gap > stall {
			stall, stallEnd = gap, samples[i].at.Sub(cut)
		}
	}
	n1, rtook := resumptions()
	rows = append(rows, result{
		Name: fmt.Sprintf("link cut in the middle of an scp of 256 MiB into the sprite, mux, %v round trip and %d Mbit/s: the pause, in round trips", rtt, bitsPerSec/1_000_000),
		Value: with(map[string]float64{"pause_rt": rts(stallEnd), "pause_ms": float64(stallEnd.Milliseconds()), "longest_stall_ms": float64(stall.Milliseconds()),
			"daemon_resume_rt": rts(rtook), "resumptions": float64(n1 - n0), "of_rate": float64(size) * 8 / took.Seconds() / float64(bitsPerSec)}),
		Note: "pause: from the cut to the first growth of the copy after it (polled every 2 ms); the copy is checksummed; of_rate: the whole scp's throughput as a fraction of the link, cut included (one run; CPU shared)",
	})

	// Laptop sleeps: the shaper drops everything both ways and withholds
	// closes; the API's edge, seeing the laptop gone, drops the sprite's
	// side, so the agent's resume window runs. On waking the connections
	// the sleep killed are found dead and the network works again.
	for _, slept := range []time.Duration{8 * time.Second, 20 * time.Second} {
		ty := startTypist(t, sshd, addr)
		ty.alive(t)
		before := r.forward("mssh")
		r.shaper.blackhole()
		r.simPost("/_sim/sprites/s/drop-links")
		time.Sleep(slept)
		wake := time.Now()
		r.shaper.cut()
		r.shaper.set(rtt, 0, bitsPerSec)
		pause, back := ty.firstAfter(wake, window+30*time.Second)
		if back {
			time.Sleep(time.Second)
		}
		sshErr := ty.end()
		after := r.forward("mssh")
		v := with(map[string]float64{"slept_s": slept.Seconds(), "resume_window_s": window.Seconds(),
			"resumptions": float64(after.Resumptions - before.Resumptions), "errors": float64(sumErrors(after.Errors) - sumErrors(before.Errors))})
		note := "resumed: the session echoed again and ssh ended cleanly"
		if back && sshErr == nil {
			v["resumed"] = 1
			v["pause_after_wake_rt"] = rts(pause)
			v["pause_after_wake_ms"] = float64(pause.Milliseconds())
		} else {
			v["resumed"] = 0
			note = fmt.Sprintf("reset: ssh said %v; status said %q", sshErr, after.LastError)
		}
		rows = append(rows, result{
			Name:  fmt.Sprintf("laptop asleep %v under an interactive ssh session (resume_window %v), mux, %v round trip", slept, window, rtt),
			Value: v,
			Note: note + "; the sleep is the shaper dropping every byte both ways and withholding closes while the emulator drops the sprite's side of the links, then the connections cut at the wake; " +
				"resume_window is 15 s here (2 min by default) to keep the bench short, so 8 s stands for a 30 s sleep and 20 s for 3 min; pause_after_wake: from the wake to the first echo",
		})
	}
	return rows
}

func sumErrors(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// muxMarkdown renders the mux rows as the README's tables.
func muxMarkdown(rows []result) string {
	var b strings.Builder
	head := false
	for _, r := range rows {
		v := r.Value
		if _, ok := v["quiet_2500ms_rt_p50"]; !ok {
			continue
		}
		if !head {
			fmt.Fprintf(&b, "\n| round trip | session active | quiet 2.5 s | quiet 10 s | new session (closed by mux_idle_timeout) | its floor: TLS + upgrade + hello (the stream rides behind the proof) | the stream's own round trip, before it did |\n| --- | --- | --- | --- | --- | --- | --- |\n")
			head = true
		}
		fmt.Fprintf(&b, "| %.0f ms | %.2f | %.2f | %.2f | %.2f (+%.1f TCP) | %.2f + %.2f + %.2f = %.2f (+1 TCP) | %.2f |\n", v["rtt_ms"],
			v["active_rt_p50"], v["quiet_2500ms_rt_p50"], v["quiet_10s_rt_p50"], v["new_session_rt_p50"], v["new_session_tcp_conns"],
			v["floor_tls_rt"], v["floor_upgrade_rt"], v["floor_hello_rt"], v["floor_rt"], v["floor_stream_rt"])
	}
	head = false
	for _, r := range rows {
		v := r.Value
		if _, ok := v["floor_resume_rt"]; !ok {
			continue
		}
		if !head {
			fmt.Fprintf(&b, "\n| at %.0f ms | pause, round trips | floor: TLS + upgrade + hello (+ a resume exchange of its own, before the resumes rode the hello), +1 TCP | result |\n| --- | --- | --- | --- |\n", v["rtt_ms"])
			head = true
		}
		floor := fmt.Sprintf("%.2f + %.2f + %.2f (+ %.2f) = %.2f (%.2f)", v["floor_tls_rt"], v["floor_upgrade_rt"], v["floor_hello_rt"], v["floor_resume_rt"],
			v["floor_rt"]-v["floor_resume_rt"], v["floor_rt"])
		switch {
		case v["slept_s"] > 0 && v["resumed"] == 1:
			fmt.Fprintf(&b, "| asleep %.0f s (window %.0f s) | %.2f after the wake | %s | resumed (%.0f resumption) |\n", v["slept_s"], v["resume_window_s"], v["pause_after_wake_rt"], floor, v["resumptions"])
		case v["slept_s"] > 0:
			fmt.Fprintf(&b, "| asleep %.0f s (window %.0f s) | — | %s | reset, %.0f error in status |\n", v["slept_s"], v["resume_window_s"], floor, v["errors"])
		case v["longest_stall_ms"] > 0:
			fmt.Fprintf(&b, "| cut under scp of 256 MiB | %.2f | %s | intact, %.2f of the link overall |\n", v["pause_rt"], floor, v["of_rate"])
		default:
			fmt.Fprintf(&b, "| cut under interactive ssh | %.2f | %s | resumed |\n", v["pause_rt"], floor)
		}
	}
	return b.String()
}
