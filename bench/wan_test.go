package bench

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/control"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

var (
	wanSeconds = flag.Float64("wan-seconds", 1.5, "bench-wan: seconds of the link's rate per throughput transfer")
	wanRates   = flag.String("wan-rates", "20,100,1000", "bench-wan: link rates for the throughput rows, in Mbit/s")
	// Long enough that mux's window, which doubles each round trip from
	// 256 KiB, spends a small part of it growing at 300 ms.
	wanWindowSeconds = flag.Float64("wan-window-seconds", 4, "bench-wan: seconds of the link's rate per one-stream transfer (wan-window)")
	wanHeapProfile   = flag.String("wan-heap-profile", "", "bench-wan: write the daemon's heap profiles (after a GC) at a quarter, half and three quarters of the 8 bulk uploads (wan-memory) to this path with -25.pb.gz etc. appended")
)

// wanRig is one emulator over TLS, a shaper in front of it and a daemon
// that reaches it through the shaper, trusting the emulator's CA.
type wanRig struct {
	e      *env
	simURL string // straight to the emulator, for its counters
	caFile string
	socket string // the daemon's control socket
	shaper *shaper
	fwd    map[string]string
	name   string    // the daemon's, for its config and socket files
	url    string    // the API, through the shaper
	config string    // the daemon's config, less the API and the token
	daemon *exec.Cmd // the daemon
	agent  string    // agent_dir, in the sprite
}

// wanRig starts a rig whose resources end with e.t; name must be unique.
// Sprite s has the echo server on port 7 and the sink on 9.
func (e *env) wanRig(name string, rtt time.Duration, bitsPerSec int64) *wanRig {
	_, echoPort, _ := net.SplitHostPort(e.echoAddr)
	_, sinkPort, _ := net.SplitHostPort(e.sinkAddr)
	return e.wanRigWith(name, rtt, bitsPerSec, []string{"s:7=" + e.echoAddr, "s:9=" + e.sinkAddr}, fmt.Sprintf(`
  - {name: echo, listen: 0, sprite: s, port: 7}
  - {name: sink, listen: 0, sprite: s, port: 9}
  - {name: mecho, listen: 0, sprite: s, port: %s, mode: mux, max_connections: 100000}
  - {name: msink, listen: 0, sprite: s, port: %s, mode: mux}
`, echoPort, sinkPort))
}

// wanRigWith starts a rig whose emulator has maps (sprite:port=address)
// and whose daemon has forwards (YAML list items).
func (e *env) wanRigWith(name string, rtt time.Duration, bitsPerSec int64, maps []string, forwards string) *wanRig {
	r := &wanRig{e: e, caFile: filepath.Join(e.dir, name+"-ca.pem"), socket: filepath.Join(e.dir, name+".sock")}
	args := []string{"--tls", "--tls-ca-out", r.caFile}
	for _, m := range maps {
		args = append(args, "--map", m)
	}
	r.simURL = e.startSim(args...)
	r.shaper = newShaper(e.t, strings.TrimPrefix(r.simURL, "https://"))
	r.shaper.set(rtt, 0, bitsPerSec)
	r.name, r.url = name, "https://"+r.shaper.addr
	r.agent = filepath.Join(e.dir, "agent-"+name)
	r.config = fmt.Sprintf("ca_file: %s\nagent_port: %d\nagent_dir: %s\nforwards:%s",
		r.caFile, testsvc.FreePort(e.t), r.agent, forwards)
	r.daemon, r.fwd = e.startDaemon(name, r.url, r.config)
	return r
}

// restart stops the rig's daemon and starts a new one with the same
// config: it finds the agent that the old one left running in the sprite.
func (r *wanRig) restart() {
	r.daemon.Process.Signal(syscall.SIGTERM)
	r.daemon.Wait()
	r.name += "-again"
	r.socket = filepath.Join(r.e.dir, r.name+".sock")
	r.daemon, r.fwd = r.e.startDaemon(r.name, r.url, r.config)
}

// loseTmp does to the sprite what a restart that lost /tmp does: the
// agent is gone, and its directory with it. The daemon's record of the
// agent stays on the laptop.
func (r *wanRig) loseTmp() {
	t := r.e.t
	pool, err := config.LoadCA(r.caFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sprites.New(sprites.Options{APIURL: r.simURL, Token: r.e.token, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// $PWD is the directory's real path, inside the emulated sprite's.
	sess, err := c.Exec(ctx, "s", sprites.ExecOptions{Dir: r.agent, Cmd: []string{"sh", "-c", `kill -9 "$(cat agent.pid)" && rm -rf -- "$PWD"`}})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for {
		ev, err := sess.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Exited {
			if ev.Code != 0 {
				t.Fatalf("losing /tmp: exit code %d", ev.Code)
			}
			return
		}
	}
}

// wanApps runs real programs across the shaper: scp of 256 MiB into the
// sprite, and pgbench with 4 clients (select-only; once on 4 connections,
// once with a connection per transaction), each through a direct and a
// mux forward and through the shaped path alone, to the same server.
func (e *env) wanApps(rtt time.Duration, bitsPerSec int64) []result {
	t := e.t
	pg := testsvc.StartPostgres(t)
	if out, err := testsvc.Command(context.Background(), t, "pgbench", "-i", "-q", "-h", pg.Dir, "-p", strconv.Itoa(pg.Port), "-U", "postgres", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v %s", err, out)
	}
	sshd := testsvc.StartSSHD(t)
	_, sshPort, _ := net.SplitHostPort(sshd.Addr)
	pgAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(pg.Port))
	r := e.wanRigWith("apps", rtt, bitsPerSec, []string{"s:22=" + sshd.Addr, "s:5432=" + pgAddr}, fmt.Sprintf(`
  - {name: ssh, listen: 0, sprite: s, port: 22}
  - {name: pg, listen: 0, sprite: s, port: 5432}
  - {name: mssh, listen: 0, sprite: s, port: %s, mode: mux}
  - {name: mpg, listen: 0, sprite: s, port: %d, mode: mux}
`, sshPort, pg.Port))
	plainSSH, plainPG := newShaper(t, sshd.Addr), newShaper(t, pgAddr)
	plainSSH.set(rtt, 0, bitsPerSec)
	plainPG.set(rtt, 0, bitsPerSec)
	// Deploy the agent first: the first mux connection is measured elsewhere.
	if c, err := net.Dial("tcp", r.fwd["mssh"]); err != nil {
		t.Fatal(err)
	} else {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		_, err = io.ReadFull(c, make([]byte, 4)) // "SSH-"
		c.Close()
		if err != nil {
			t.Fatalf("the agent's first connection: %v", err)
		}
	}

	const size = 256 << 20
	src, want := payloadFile(t, size, 1)
	dstDir := t.TempDir()
	scp := func(addr, name string) float64 {
		_, port, _ := net.SplitHostPort(addr)
		dst := filepath.Join(dstDir, name)
		start := time.Now()
		args := append(sshd.SSHArgs("-P", "127.0.0.1", port), "-q", src, sshd.User+"@127.0.0.1:"+dst)
		if out, err := testsvc.Command(context.Background(), t, "scp", args...).CombinedOutput(); err != nil {
			t.Fatalf("scp through %s: %v\n%s", name, err, out)
		}
		took := time.Since(start)
		got, err := os.ReadFile(dst)
		if err != nil || sha256.Sum256(got) != want {
			t.Fatalf("scp through %s: the copy differs (%v)", name, err)
		}
		os.Remove(dst)
		return float64(size) * 8 / took.Seconds() / float64(bitsPerSec)
	}
	v := map[string]float64{"rtt_ms": float64(rtt.Milliseconds()), "rate_mbit": float64(bitsPerSec) / 1e6}
	v["scp_shaped_alone_of_rate"] = scp(plainSSH.addr, "alone")
	v["scp_direct_of_rate"] = scp(r.fwd["ssh"], "direct")
	v["scp_mux_of_rate"] = scp(r.fwd["mssh"], "mux")
	rows := []result{{
		Name:  fmt.Sprintf("scp of 256 MiB into the sprite at %v round trip and %d Mbit/s, as a fraction of the link's rate", rtt, bitsPerSec/1_000_000),
		Value: v,
		Note:  "one run per path, checksummed; shaped_alone is scp to the same sshd through the shaper without spritefwd; the time includes ssh's own handshake round trips",
	}}

	pgbench := func(addr string, extra ...string) float64 {
		_, port, _ := net.SplitHostPort(addr)
		args := append([]string{"-c", "4", "-j", "2", "-T", "10", "-S", "-n", "-h", "127.0.0.1", "-p", port, "-U", "postgres"}, extra...)
		out, err := testsvc.Command(context.Background(), t, "pgbench", append(args, "postgres")...).CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench: %v\n%s", err, out)
		}
		m := tps.FindSubmatch(out)
		if m == nil {
			t.Fatalf("pgbench printed no tps:\n%s", out)
		}
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		return tps
	}
	for _, mode := range []struct {
		name  string
		extra []string
	}{{"pgbench -c 4 -S", nil}, {"pgbench -c 4 -S -C (a connection per transaction)", []string{"-C"}}} {
		alone, direct, muxed := pgbench(plainPG.addr, mode.extra...), pgbench(r.fwd["pg"], mode.extra...), pgbench(r.fwd["mpg"], mode.extra...)
		rows = append(rows, result{
			Name: fmt.Sprintf("%s at %v round trip and %d Mbit/s", mode.name, rtt, bitsPerSec/1_000_000),
			Value: map[string]float64{"rtt_ms": float64(rtt.Milliseconds()), "shaped_alone_tps": alone, "direct_tps": direct, "mux_tps": muxed,
				"direct_vs_alone": direct / alone, "mux_vs_alone": muxed / alone},
			Note: "one 10-second run per path; shaped_alone connects to PostgreSQL through the shaper without spritefwd (each new connection then costs its TCP handshake, which the shaper cannot delay, and PostgreSQL's start-up exchange)",
		})
	}
	return rows
}

// handshakes reads the emulator's TLS counters, straight (not shaped).
func (r *wanRig) handshakes() spritestest.TLSStats {
	pool, err := config.LoadCA(r.caFile)
	if err != nil {
		r.e.t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, r.simURL+"/_sim/tls", nil)
	req.Header.Set("Authorization", "Bearer "+r.e.token)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		r.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st spritestest.TLSStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		r.e.t.Fatal(err)
	}
	return st
}

// settled waits until forward fwd has no connection and its agent no
// stream: closed on the client's side, a stream still ends through the
// agent, a round trip or so later.
func (r *wanRig) settled(fwd string) {
	start := time.Now()
	for {
		f := r.forward(fwd)
		if f.Open == 0 && (f.Agent == nil || f.Agent.Streams == 0) {
			r.e.t.Logf("%s settled %v after the connection closed", fwd, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 30*time.Second {
			r.e.t.Fatalf("%s: %d connections and %d streams still open 30 s after the last closed", fwd, f.Open, f.Agent.Streams)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forward reads the daemon's status of one forward.
func (r *wanRig) forward(name string) control.Forward {
	c := control.NewClient(r.socket)
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil {
		r.e.t.Fatal(err)
	}
	for _, f := range st.Forwards {
		if f.Name == name {
			return f
		}
	}
	r.e.t.Fatalf("no forward %s", name)
	return control.Forward{}
}

// warmTimed measures n connections to the direct forward fwd while another
// connection holds it in use, each once the sprite's spare links are back
// (a user opening connections seconds apart, not a burst).
func (r *wanRig) warmTimed(fwd string, n int) ([]time.Duration, control.Forward) {
	held, err := net.Dial("tcp", r.fwd[fwd])
	if err != nil {
		r.e.t.Fatal(err)
	}
	defer held.Close()
	held.Write([]byte{1})
	if _, err := io.ReadFull(held, make([]byte, 1)); err != nil {
		r.e.t.Fatal(err)
	}
	before := r.forward(fwd)
	var ds []time.Duration
	for range n {
		for start := time.Now(); r.forward(fwd).WarmLinks < config.DefaultWarmLinks; time.Sleep(20 * time.Millisecond) {
			if time.Since(start) > 30*time.Second {
				r.e.t.Fatalf("%s: no spare links after 30 s", fwd)
			}
		}
		if ds, err = setupTimes(ds, r.fwd[fwd], 1); err != nil {
			r.e.t.Fatal(err)
		}
	}
	after := r.forward(fwd)
	after.WarmHits -= before.WarmHits
	after.WarmMisses -= before.WarmMisses
	after.WarmFallbacks -= before.WarmFallbacks
	return ds, after
}

// timed measures connect → first echoed byte n times on addr, and counts
// the TLS handshakes (so TCP connections to the API) the emulator saw
// meanwhile, less the one of the count itself.
func (r *wanRig) timed(addr string, n int) ([]time.Duration, spritestest.TLSStats) {
	before := r.handshakes()
	ds, err := setupTimes(nil, addr, n)
	if err != nil {
		r.e.t.Fatalf("%s: %v", addr, err)
	}
	after := r.handshakes()
	return ds, spritestest.TLSStats{Full: after.Full - before.Full - 1, Resumed: after.Resumed - before.Resumed}
}

// wanSetup measures connect → first echoed byte at rtt, in round trips:
// each sample is a new emulator and daemon, so that the first connection
// has no TLS session to resume and, through mux, deploys the agent.
func (e *env) wanSetup(rtt time.Duration, samples, later int) result {
	const deployRate = 20_000_000 // the agent's upload pays it: about 4 s of a 10 MB binary
	first := map[string][]time.Duration{}
	next := map[string][]time.Duration{}
	var warm []time.Duration
	var hits, tries int64
	conns := map[string]float64{}
	resumed := map[string]float64{}
	for i := range samples {
		e.t.Run(fmt.Sprintf("rtt-%v-%d", rtt, i), func(t *testing.T) {
			se := *e
			se.t = t
			r := se.wanRig(fmt.Sprintf("setup-%v-%d", rtt, i), rtt, deployRate)
			// Let the daemon's own start-up calls finish: a user's first
			// connection meets a daemon that has been idle.
			time.Sleep(time.Second + 4*rtt)
			for _, p := range []struct{ name, fwd string }{{"direct", "echo"}, {"mux", "mecho"}} {
				ds, hs := r.timed(r.fwd[p.fwd], 1)
				first[p.name] = append(first[p.name], ds...)
				conns[p.name+"_first"] += float64(hs.Full+hs.Resumed) / float64(samples)
				resumed[p.name+"_first"] += float64(hs.Resumed) / float64(samples)
				ds, hs = r.timed(r.fwd[p.fwd], later)
				next[p.name] = append(next[p.name], ds...)
				conns[p.name+"_later"] += float64(hs.Full+hs.Resumed) / float64(samples*later)
				resumed[p.name+"_later"] += float64(hs.Resumed) / float64(samples*later)
			}
			ds, st := r.warmTimed("echo", later)
			warm = append(warm, ds...)
			hits += st.WarmHits
			tries += st.WarmHits + st.WarmMisses + st.WarmFallbacks
		})
	}
	v := map[string]float64{"rtt_ms": float64(rtt.Milliseconds())}
	for _, p := range []string{"direct", "mux"} {
		for when, ds := range map[string][]time.Duration{"first": first[p], "later": next[p]} {
			k := p + "_" + when
			v[k+"_rt_p50"] = float64(percentile(ds, 0.5)) / float64(rtt)
			v[k+"_rt_p90"] = float64(percentile(ds, 0.9)) / float64(rtt)
			v[k+"_tcp_conns"] = conns[k]
			v[k+"_tls_resumed"] = resumed[k]
			v[k+"_rt_p50_with_syn"] = v[k+"_rt_p50"] + conns[k]
		}
	}
	v["direct_warm_rt_p50"] = float64(percentile(warm, 0.5)) / float64(rtt)
	v["direct_warm_rt_p90"] = float64(percentile(warm, 0.9)) / float64(rtt)
	v["direct_warm_hit_fraction"] = float64(hits) / float64(max(tries, 1))
	return result{
		Name:  fmt.Sprintf("connect to first echoed byte through the shaper, %v round trip, in round trips", rtt),
		Value: v,
		Note: fmt.Sprintf("%d fresh daemons (first: no TLS session yet; mux first includes the agent's deployment at 20 Mbit/s), %d later connections each; "+
			"measured times exclude TCP handshakes to the API (a user-space shaper cannot delay a SYN): *_tcp_conns is how many new TCP connections the emulator saw per client connection, "+
			"and *_with_syn adds one round trip for each (an upper bound where they overlapped, as the message-size probe does); "+
			"direct_warm: %d connections per daemon while another holds the forward in use, each once its sprite's spare links were back; they open no TCP connection on their path", samples, later, later),
	}
}

// wanMuxFirst measures a mux forward's first connection, connect to first
// echoed byte, at rtt and a rate: with no agent in the sprite (deployed
// then), from a fresh daemon to a sprite whose agent runs (the old
// daemon's, which that daemon's record of it leads to), and from a fresh
// daemon whose record is stale: the sprite lost /tmp. Direct mode's first connection, from the same daemon, is the
// alternative a deploying forward could take. Each sample is a new
// emulator and daemon.
func (e *env) wanMuxFirst(rtt time.Duration, bitsPerSec int64, samples int) result {
	times := map[string][]time.Duration{}
	conns := map[string]float64{}
	for i := range samples {
		e.t.Run(fmt.Sprintf("mux-first-%v-%d", rtt, i), func(t *testing.T) {
			se := *e
			se.t = t
			r := se.wanRig(fmt.Sprintf("muxfirst-%v-%d", rtt, i), rtt, bitsPerSec)
			// A user's first connection meets a daemon that has been idle.
			time.Sleep(time.Second + 4*rtt)
			for _, p := range []struct{ name, fwd string }{{"direct", "echo"}, {"absent", "mecho"}} {
				ds, hs := r.timed(r.fwd[p.fwd], 1)
				times[p.name] = append(times[p.name], ds...)
				conns[p.name] += float64(hs.Full+hs.Resumed) / float64(samples)
			}
			r.restart()
			time.Sleep(time.Second + 4*rtt)
			ds, hs := r.timed(r.fwd["mecho"], 1)
			times["present"] = append(times["present"], ds...)
			conns["present"] += float64(hs.Full+hs.Resumed) / float64(samples)
			// The connection must be over before the agent goes: a daemon
			// whose stream outlived its agent would deploy a new one for
			// it, and leave the next daemon a record that is not stale.
			r.settled("mecho")
			r.loseTmp()
			r.restart()
			time.Sleep(time.Second + 4*rtt)
			ds, hs = r.timed(r.fwd["mecho"], 1)
			times["stale"] = append(times["stale"], ds...)
			conns["stale"] += float64(hs.Full+hs.Resumed) / float64(samples)
		})
	}
	v := map[string]float64{"rtt_ms": float64(rtt.Milliseconds()), "rate_mbit": float64(bitsPerSec) / 1e6}
	for k, ds := range times {
		v[k+"_s_p50"] = percentile(ds, 0.5).Seconds()
		v[k+"_s_max"] = slices.Max(ds).Seconds()
		v[k+"_rt_p50"] = float64(percentile(ds, 0.5)) / float64(rtt)
		v[k+"_tcp_conns"] = conns[k]
	}
	if fi, err := os.Stat(filepath.Join(e.dir, "spritefwd-agent")); err == nil {
		v["agent_bytes"] = float64(fi.Size())
	}
	return result{
		Name:  fmt.Sprintf("a mux forward's first connection at %v round trip and %d Mbit/s, connect to first echoed byte", rtt, bitsPerSec/1_000_000),
		Value: v,
		Note: fmt.Sprintf("%d fresh emulators and daemons; absent: no agent in the sprite, so it is deployed (agent_bytes before compression); present: a fresh daemon, the agent of the one before still running (it has that one's record of the agent); "+
			"stale: a fresh daemon whose record is stale, the sprite having lost /tmp (agent and all) since; "+
			"direct: the same daemon's first direct connection; times exclude TCP handshakes to the API (*_tcp_conns counts them)", samples),
	}
}

// wanWindow is one stream's upload through the shaper alone, direct mode
// and mux, at rtt and a rate, as a fraction of the link's rate: mux's
// window starts small and must grow to the link's bandwidth-delay product,
// which at 1 Gbit/s and 300 ms is 37.5 MB.
func (e *env) wanWindow(r *wanRig, plain *shaper, rtt time.Duration, bitsPerSec int64) result {
	r.shaper.set(rtt, 0, bitsPerSec)
	plain.set(rtt, 0, bitsPerSec)
	size := max(int64(float64(bitsPerSec)/8**wanWindowSeconds), 1<<20)
	addrs := map[string]string{"tcp": plain.addr, "direct": r.fwd["sink"], "mux": r.fwd["msink"]}
	fracs := map[string][]float64{}
	paths := []string{"tcp", "direct", "mux"}
	interleaved(e.t, paths, func(path string) error {
		t0 := time.Now()
		if err := push(addrs[path], 0); err != nil {
			return err
		}
		fixed := time.Since(t0)
		start := time.Now()
		if err := push(addrs[path], size); err != nil {
			return err
		}
		took := time.Since(start) - fixed
		fracs[path] = append(fracs[path], float64(size)*8/took.Seconds()/float64(bitsPerSec))
		e.t.Logf("one stream at %v, %d Mbit/s, %s: %.2f of the link in %v", rtt, bitsPerSec/1_000_000, path, fracs[path][len(fracs[path])-1], took.Round(time.Millisecond))
		return nil
	})
	v := map[string]float64{"rate_mbit": float64(bitsPerSec) / 1e6, "rtt_ms": float64(rtt.Milliseconds()), "bytes_per_run": float64(size)}
	for _, p := range paths {
		v[p+"_of_rate"] = median(fracs[p])
	}
	v["mux_vs_direct"] = v["mux_of_rate"] / v["direct_of_rate"]
	return result{
		Name:  fmt.Sprintf("one stream's upload at %v round trip and %d Mbit/s, as a fraction of the link's rate", rtt, bitsPerSec/1_000_000),
		Value: v,
		Note: fmt.Sprintf("median of %d alternating runs of %d MiB (-wan-window-seconds of the link), each path in the same run; tcp is the shaper alone to the sink; "+
			"mux's window starts at 256 KiB and grows with what the link delivers, up to resume_buffer; direct mode has no window of its own through the shaper, whose delay line buffers without bound", rounds, size>>20),
	}
}

// wanMemory is the daemon's RSS with 8 bulk streams uploading at once
// through a 1 Gbit/s link at rtt, sampled while they run, on a daemon of
// their own; then r's with 10,000 idle mux streams open (make bench's idle
// section).
func (e *env) wanMemory(r *wanRig, rtt time.Duration) []result {
	// The bulk uploads go first, on a fresh daemon: one that has held
	// 10,000 idle streams, or pushed gigabytes through one stream, keeps
	// that heap, which the windows then fill without a new page, and its
	// RSS would hide them.
	m := e.wanRig("memory", rtt, 1_000_000_000)
	if _, err := setupTimes(nil, m.fwd["mecho"], 1); err != nil { // the agent, deployed once
		e.t.Fatal(err)
	}
	bulkRow := e.wanBulkMemory(m, rtt)

	// The idle section checks each connection with an echo, one after
	// another: unshaped, so that 10,000 of them take seconds, not 17
	// minutes of round trips. Idle streams' memory does not depend on it.
	r.shaper.set(0, 0, 0)
	re := *e
	re.fwd, re.socket = r.fwd, r.socket
	idle := re.idle("mecho")
	r.shaper.set(rtt, 0, 1_000_000_000)
	return []result{idle, bulkRow}
}

// wanBulkMemory is r's daemon's RSS while 8 bulk mux uploads run through
// its 1 Gbit/s link at rtt.
func (e *env) wanBulkMemory(r *wanRig, rtt time.Duration) result {
	re := *e
	re.fwd, re.socket = r.fwd, r.socket
	const bulk = 8
	size := int64(1e9 / 8 * *wanWindowSeconds / bulk * 2)
	done := make(chan struct{})
	// The live heap (after the last collection) beside RSS: what the
	// streams hold, against what the process has taken from the system,
	// garbage not yet collected and not yet returned included.
	type sample struct{ rss, heap, windows int64 }
	sampled := make(chan sample)
	st := re.status()
	before, heapBefore := st.RSSBytes, int64(st.HeapBytes)
	// The uploads take about this long at the link's rate.
	expect := time.Duration(float64(size*bulk) * 8 / 1e9 * float64(time.Second))
	profiles := []int{25, 50, 75}
	go func() {
		var peak sample
		start := time.Now()
		for {
			select {
			case <-done:
				sampled <- peak
				return
			case <-time.After(250 * time.Millisecond):
				if len(profiles) > 0 && *wanHeapProfile != "" && time.Since(start) > expect*time.Duration(profiles[0])/100 {
					// Twice: a sync.Pool's contents outlive one collection
					// (its victim cache), not two, so the second shows
					// what pools held in the first.
					w := re.status().MuxWindowBytes
					re.heapProfile(fmt.Sprintf("%s-%d.pb.gz", *wanHeapProfile, profiles[0]))
					re.heapProfile(fmt.Sprintf("%s-%d-again.pb.gz", *wanHeapProfile, profiles[0]))
					e.t.Logf("heap profiles at %d%% of the uploads: the windows held %.1f MiB beyond 256 KiB each", profiles[0], float64(w)/(1<<20))
					profiles = profiles[1:]
				}
				st := re.status()
				peak.rss, peak.heap = max(peak.rss, st.RSSBytes), max(peak.heap, int64(st.HeapBytes))
				peak.windows = max(peak.windows, st.MuxWindowBytes)
			}
		}
	}()
	errs := make(chan error, bulk)
	cpu0 := procCPU(r.daemon.Process.Pid)
	start := time.Now()
	for range bulk {
		go func() { errs <- push(r.fwd["msink"], size) }()
	}
	for range bulk {
		if err := <-errs; err != nil {
			e.t.Error(err)
		}
	}
	took := time.Since(start)
	cpu := procCPU(r.daemon.Process.Pid) - cpu0
	close(done)
	peak := <-sampled
	return result{
		Name: fmt.Sprintf("the daemon's RSS during %d bulk mux uploads at %v round trip and 1 Gbit/s", bulk, rtt),
		Value: map[string]float64{"rtt_ms": float64(rtt.Milliseconds()), "bulk_streams": bulk, "bytes_per_stream": float64(size),
			"daemon_rss_mib_before": float64(before) / (1 << 20), "daemon_rss_mib_bulk_peak": float64(peak.rss) / (1 << 20),
			"daemon_heap_mib_before": float64(heapBefore) / (1 << 20), "daemon_heap_mib_bulk_peak": float64(peak.heap) / (1 << 20),
			"mux_window_mib_bulk_peak": float64(peak.windows) / (1 << 20),
			"bulk_of_rate":             float64(size*bulk) * 8 / took.Seconds() / 1e9,
			"daemon_cpu_s_per_gib":     cpu / (float64(size*bulk) / (1 << 30))},
		Note: "RSS, live heap (after the last collection) and the windows beyond 256 KiB each (mux_window) from status, sampled every 250 ms while all 8 run, on a daemon that has done nothing else; what the windows grow beyond 256 KiB shares mux_memory (256 MiB)",
	}
}

// wanThroughput is one and 8 streams' upload at rtt and a rate, as a
// fraction of the link's rate: through the shaper alone (plain TCP to the
// sink), direct mode and mux. Each transfer's fixed cost (connect, setup,
// the final acknowledgement) is measured by an empty push and taken off.
func (e *env) wanThroughput(r *wanRig, plain *shaper, rtt time.Duration, bitsPerSec int64) result {
	r.shaper.set(rtt, 0, bitsPerSec)
	plain.set(rtt, 0, bitsPerSec)
	// 1.5 s of the link per transfer by default: long enough to dwarf a
	// round trip or two, short enough that the whole bench stays in
	// minutes, though TCP's slow start still shows in one stream.
	size := max(int64(float64(bitsPerSec)/8**wanSeconds), 1<<20)
	addrs := map[string]string{"tcp": plain.addr, "direct": r.fwd["sink"], "mux": r.fwd["msink"]}
	fracs := map[string][]float64{}
	var paths []string
	for _, streams := range []int{1, 8} {
		for _, p := range []string{"tcp", "direct", "mux"} {
			paths = append(paths, fmt.Sprintf("%s_%d", p, streams))
		}
	}
	interleaved(e.t, paths, func(path string) error {
		name, n, _ := strings.Cut(path, "_")
		streams := 1
		if n == "8" {
			streams = 8
		}
		addr := addrs[name]
		t0 := time.Now()
		if err := push(addr, 0); err != nil {
			return err
		}
		fixed := time.Since(t0)
		per := size / int64(streams)
		errs := make(chan error, streams)
		var wg sync.WaitGroup
		start := time.Now()
		for range streams {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- push(addr, per) }()
		}
		wg.Wait()
		took := time.Since(start) - fixed
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		fracs[path] = append(fracs[path], float64(per*int64(streams))*8/took.Seconds()/float64(bitsPerSec))
		return nil
	})
	v := map[string]float64{"rate_mbit": float64(bitsPerSec) / 1e6, "rtt_ms": float64(rtt.Milliseconds()), "bytes_per_run": float64(size)}
	for _, p := range paths {
		v[p+"_streams_of_rate"] = median(fracs[p])
	}
	return result{
		Name:  fmt.Sprintf("upload at %v round trip and %d Mbit/s, as a fraction of the link's rate", rtt, bitsPerSec/1_000_000),
		Value: v,
		Note: fmt.Sprintf("median of %d alternating runs of %d MiB (-wan-seconds of the link); tcp is the shaper alone to the sink (its own ceiling); mux's window is resume_buffer (4 MiB) per round trip; "+
			"an empty push's time (setup and the last acknowledgement) is taken off", rounds, size>>20),
	}
}

// TestBenchWAN measures what a user far from the API pays, through a
// shaper that delays every byte of TLS, the upgrade and the data. See
// README.md's Performance section for what it includes and excludes.
func TestBenchWAN(t *testing.T) {
	if *out == "" {
		t.Skip("bench-wan: pass -out FILE (make bench-wan)")
	}
	e := newEnv(t)
	e.sinkAddr = serveTCP(t, sink)
	e.echoAddr = serveTCP(t, testsvc.Echo)
	// The first emulator makes the token the others share.
	e.startSim()
	var rows []result
	if want("wan-setup") {
		for _, rtt := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond} {
			rows = append(rows, e.wanSetup(rtt, 5, 6))
		}
	}
	const rtt = 100 * time.Millisecond
	if want("wan-mux-first") {
		rows = append(rows, e.wanMuxFirst(rtt, 20_000_000, 3))
	}
	if want("wan-throughput") {
		r := e.wanRig("throughput", rtt, 0)
		plain := newShaper(t, e.sinkAddr)
		if _, err := setupTimes(nil, r.fwd["mecho"], 1); err != nil { // the agent, deployed once
			t.Fatal(err)
		}
		for _, mbit := range strings.Split(*wanRates, ",") {
			n, err := strconv.ParseInt(mbit, 10, 64)
			if err != nil {
				t.Fatalf("-wan-rates: %v", err)
			}
			rows = append(rows, e.wanThroughput(r, plain, rtt, n*1_000_000))
		}
	}
	if want("wan-window") || want("wan-memory") {
		r := e.wanRig("window", rtt, 0)
		plain := newShaper(t, e.sinkAddr)
		if _, err := setupTimes(nil, r.fwd["mecho"], 1); err != nil { // the agent, deployed once
			t.Fatal(err)
		}
		if want("wan-window") {
			for _, rt := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond} {
				for _, rate := range []int64{100_000_000, 1_000_000_000} {
					rows = append(rows, e.wanWindow(r, plain, rt, rate))
				}
			}
		}
		if want("wan-memory") {
			rows = append(rows, e.wanMemory(r, rtt)...)
		}
	}
	if want("wan-apps") {
		rows = append(rows, e.wanApps(rtt, 100_000_000)...)
	}
	if want("wan-mux-quiet") {
		for _, rtt := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond} {
			rows = append(rows, e.wanMuxSetup(rtt))
		}
	}
	if want("wan-resume") {
		rows = append(rows, e.wanResume(200*time.Millisecond, 100_000_000)...)
	}
	writeReport(t, "spritefwd WAN benchmarks", rows)
	fmt.Print(wanMarkdown(rows))
	fmt.Print(muxMarkdown(rows))
}

// wanMarkdown renders the rows as the README's tables.
func wanMarkdown(rows []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| round trip | direct, first | direct, later (back to back) | direct, warm (forward in use) | mux, first (deploys the agent at 20 Mbit/s) | mux, later |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		v := r.Value
		if _, ok := v["direct_first_rt_p50"]; !ok {
			continue
		}
		cell := func(k string) string {
			return fmt.Sprintf("%.1f / %.1f (+%.1f TCP)", v[k+"_rt_p50"], v[k+"_rt_p90"], v[k+"_tcp_conns"])
		}
		warm := fmt.Sprintf("%.1f / %.1f (%.0f%% on a spare)", v["direct_warm_rt_p50"], v["direct_warm_rt_p90"], 100*v["direct_warm_hit_fraction"])
		fmt.Fprintf(&b, "| %.0f ms | %s | %s | %s | %s | %s |\n", v["rtt_ms"], cell("direct_first"), cell("direct_later"), warm, cell("mux_first"), cell("mux_later"))
	}
	for _, r := range rows {
		v := r.Value
		if _, ok := v["absent_s_p50"]; !ok {
			continue
		}
		fmt.Fprintf(&b, "\n| first connection, %.0f ms, %.0f Mbit/s | seconds, p50 / max | round trips, p50 (+TCP) |\n| --- | --- | --- |\n", v["rtt_ms"], v["rate_mbit"])
		for _, k := range []struct{ key, what string }{{"absent", "mux, no agent in the sprite (deploys it)"}, {"present", "mux, agent running, fresh daemon"}, {"direct", "direct"}} {
			fmt.Fprintf(&b, "| %s | %.2f / %.2f | %.1f (+%.1f) |\n", k.what, v[k.key+"_s_p50"], v[k.key+"_s_max"], v[k.key+"_rt_p50"], v[k.key+"_tcp_conns"])
		}
	}
	fmt.Fprintf(&b, "\n| one stream | TCP alone | direct | mux | mux / direct |\n| --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		v := r.Value
		if _, ok := v["mux_vs_direct"]; ok {
			fmt.Fprintf(&b, "| %.0f ms, %.0f Mbit/s | %.2f | %.2f | %.2f | %.2f |\n", v["rtt_ms"], v["rate_mbit"], v["tcp_of_rate"], v["direct_of_rate"], v["mux_of_rate"], v["mux_vs_direct"])
		}
		if _, ok := v["rss_kib_per_conn"]; ok {
			fmt.Fprintf(&b, "\ndaemon RSS with %.0f idle mux streams: %.0f MiB (%.0f MiB before; %.1f KiB each)\n", v["held"], v["daemon_rss_mib_held"], v["daemon_rss_mib_before"], v["rss_kib_per_conn"])
		}
		if _, ok := v["daemon_rss_mib_bulk_peak"]; ok {
			fmt.Fprintf(&b, "\ndaemon RSS during %.0f bulk mux uploads: %.0f MiB at the peak (%.0f MiB before; together %.2f of 1 Gbit/s); live heap %.0f MiB at the peak (%.0f before), of which the windows beyond 256 KiB each %.0f MiB; daemon CPU %.2f s/GiB\n", v["bulk_streams"], v["daemon_rss_mib_bulk_peak"], v["daemon_rss_mib_before"], v["bulk_of_rate"], v["daemon_heap_mib_bulk_peak"], v["daemon_heap_mib_before"], v["mux_window_mib_bulk_peak"], v["daemon_cpu_s_per_gib"])
		}
	}
	fmt.Fprintf(&b, "\n| link (100 ms) | TCP alone, 1 | direct, 1 | mux, 1 | TCP alone, 8 | direct, 8 | mux, 8 |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		v := r.Value
		if _, ok := v["tcp_1_streams_of_rate"]; !ok {
			continue
		}
		fmt.Fprintf(&b, "| %.0f Mbit/s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", v["rate_mbit"],
			v["tcp_1_streams_of_rate"], v["direct_1_streams_of_rate"], v["mux_1_streams_of_rate"],
			v["tcp_8_streams_of_rate"], v["direct_8_streams_of_rate"], v["mux_8_streams_of_rate"])
	}
	fmt.Fprintf(&b, "\n| | alone | direct | mux |\n| --- | --- | --- | --- |\n")
	for _, r := range rows {
		v := r.Value
		if _, ok := v["scp_direct_of_rate"]; ok {
			alone := v["scp_shaped_alone_of_rate"]
			fmt.Fprintf(&b, "| `scp` of 256 MiB into the sprite, fraction of the link | %.2f | %.2f (%.2f×) | %.2f (%.2f×) |\n",
				alone, v["scp_direct_of_rate"], v["scp_direct_of_rate"]/alone, v["scp_mux_of_rate"], v["scp_mux_of_rate"]/alone)
		}
		if _, ok := v["shaped_alone_tps"]; ok {
			fmt.Fprintf(&b, "| %s, transactions/s | %.1f | %.1f (%.2f×) | %.1f (%.2f×) |\n", r.Name,
				v["shaped_alone_tps"], v["direct_tps"], v["direct_vs_alone"], v["mux_tps"], v["mux_vs_alone"])
		}
	}
	return b.String()
}

// heapProfile writes the daemon's heap profile, taken after a GC so that
// it shows what lives, to path.
func (e *env) heapProfile(path string) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", e.socket)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("http://spritefwd/debug/pprof/heap?gc=1")
	if err != nil {
		e.t.Error(err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		e.t.Error(err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		e.t.Error(err)
	}
}
