package bench

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// wanRig is one emulator over TLS, a shaper in front of it and a daemon
// that reaches it through the shaper, trusting the emulator's CA.
type wanRig struct {
	e      *env
	simURL string // straight to the emulator, for its counters
	caFile string
	shaper *shaper
	fwd    map[string]string
}

// wanRig starts a rig whose resources end with e.t; name must be unique.
func (e *env) wanRig(name string, rtt time.Duration, bitsPerSec int64) *wanRig {
	r := &wanRig{e: e, caFile: filepath.Join(e.dir, name+"-ca.pem")}
	r.simURL = e.startSim("--tls", "--tls-ca-out", r.caFile, "--map", "s:7="+e.echoAddr, "--map", "s:9="+e.sinkAddr)
	r.shaper = newShaper(e.t, strings.TrimPrefix(r.simURL, "https://"))
	r.shaper.set(rtt, 0, bitsPerSec)
	_, echoPort, _ := net.SplitHostPort(e.echoAddr)
	_, sinkPort, _ := net.SplitHostPort(e.sinkAddr)
	_, r.fwd = e.startDaemon(name, "https://"+r.shaper.addr, fmt.Sprintf(`ca_file: %s
agent_port: %d
agent_dir: %s
forwards:
  - {name: echo, listen: 0, sprite: s, port: 7}
  - {name: sink, listen: 0, sprite: s, port: 9}
  - {name: mecho, listen: 0, sprite: s, port: %s, mode: mux}
  - {name: msink, listen: 0, sprite: s, port: %s, mode: mux}
`, r.caFile, testsvc.FreePort(e.t), filepath.Join(e.dir, "agent-"+name), echoPort, sinkPort))
	return r
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
	return result{
		Name:  fmt.Sprintf("connect to first echoed byte through the shaper, %v round trip, in round trips", rtt),
		Value: v,
		Note: fmt.Sprintf("%d fresh daemons (first: no TLS session yet; mux first includes the agent's deployment at 20 Mbit/s), %d later connections each; "+
			"measured times exclude TCP handshakes to the API (a user-space shaper cannot delay a SYN): *_tcp_conns is how many new TCP connections the emulator saw per client connection, "+
			"and *_with_syn adds one round trip for each (an upper bound where they overlapped, as the message-size probe does)", samples, later),
	}
}

// wanThroughput is one and 8 streams' upload at rtt and a rate, as a
// fraction of the link's rate: through the shaper alone (plain TCP to the
// sink), direct mode and mux. Each transfer's fixed cost (connect, setup,
// the final acknowledgement) is measured by an empty push and taken off.
func (e *env) wanThroughput(r *wanRig, plain *shaper, rtt time.Duration, bitsPerSec int64) result {
	r.shaper.set(rtt, 0, bitsPerSec)
	plain.set(rtt, 0, bitsPerSec)
	// 1.5 s of the link per transfer: long enough to dwarf a round trip
	// or two, short enough that the whole bench stays in minutes.
	size := max(bitsPerSec/8*3/2, 1<<20)
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
		Note: fmt.Sprintf("median of %d alternating runs of %d MiB; tcp is the shaper alone to the sink (its own ceiling); mux's window is resume_buffer (4 MiB) per round trip; "+
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
	for _, rtt := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond} {
		rows = append(rows, e.wanSetup(rtt, 5, 6))
	}
	const rtt = 100 * time.Millisecond
	r := e.wanRig("throughput", rtt, 0)
	plain := newShaper(t, e.sinkAddr)
	if _, err := setupTimes(nil, r.fwd["mecho"], 1); err != nil { // the agent, deployed once
		t.Fatal(err)
	}
	for _, mbit := range []int64{20, 100, 1000} {
		rows = append(rows, e.wanThroughput(r, plain, rtt, mbit*1_000_000))
	}
	writeReport(t, "spritefwd WAN benchmarks", rows)
	fmt.Print(wanMarkdown(rows))
}

// wanMarkdown renders the rows as the README's tables.
func wanMarkdown(rows []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| round trip | direct, first | direct, later (resumed TLS) | mux, first (agent deployed at 20 Mbit/s) | mux, later |\n| --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		v := r.Value
		if _, ok := v["direct_first_rt_p50"]; !ok {
			continue
		}
		cell := func(k string) string {
			return fmt.Sprintf("%.1f / %.1f (+%.1f TCP)", v[k+"_rt_p50"], v[k+"_rt_p90"], v[k+"_tcp_conns"])
		}
		fmt.Fprintf(&b, "| %.0f ms | %s | %s | %s | %s |\n", v["rtt_ms"], cell("direct_first"), cell("direct_later"), cell("mux_first"), cell("mux_later"))
	}
	fmt.Fprintf(&b, "\n| link (100 ms) | TCP alone, 1 | direct, 1 | mux, 1 | TCP alone, 8 | direct, 8 | mux, 8 |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		v := r.Value
		if _, ok := v["rate_mbit"]; !ok {
			continue
		}
		fmt.Fprintf(&b, "| %.0f Mbit/s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", v["rate_mbit"],
			v["tcp_1_streams_of_rate"], v["direct_1_streams_of_rate"], v["mux_1_streams_of_rate"],
			v["tcp_8_streams_of_rate"], v["direct_8_streams_of_rate"], v["mux_8_streams_of_rate"])
	}
	return b.String()
}
