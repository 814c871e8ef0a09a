package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/control"
	"github.com/spritefwd/spritefwd/metrics"
	svc "github.com/spritefwd/spritefwd/service"
	"github.com/spritefwd/spritefwd/tunnel"
)

// runnerOptions configure one daemon process.
type runnerOptions struct {
	log        zerolog.Logger
	configPath string         // absolute; empty for ad hoc forwards, which never reload
	cfg        *config.Config // the config to start with
	socket     string         // control socket; empty for none
	watch      bool           // reload when the config file changes
	poll       time.Duration  // config poll interval (0: the default)
	// root: the daemon runs as root, so it refuses config and token files
	// that anyone but root could change (config.CheckRootFiles).
	root bool
}

// runner is the daemon with everything around the engine: reloads, the
// control socket and the metrics endpoint. It implements control.Backend
// and service.Runner.
type runner struct {
	o       runnerOptions
	d       *tunnel.Daemon
	m       *metrics.Metrics
	started time.Time
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	reloadMu sync.Mutex // one reload at a time, whatever triggered it

	mu          sync.Mutex
	cfg         *config.Config
	lastReload  time.Time
	rejected    []string
	rejectedAt  time.Time
	metricsLn   net.Listener
	metricsSrv  *http.Server
	metricsWant string
}

func newRunner(o runnerOptions) *runner {
	r := &runner{o: o, started: time.Now(), cfg: o.cfg}
	r.m = metrics.New(func() []tunnel.Status { return r.d.Status() }, func() (int64, int64) { return r.d.MuxWindows() })
	r.d = tunnel.New(tunnel.Options{
		Log: o.log, UserAgent: "spritefwd/" + versionString(),
		OnLinkSetup: r.m.ObserveSetup, OnWake: r.m.ObserveWake, AgentBinary: agentBinary,
		StateDir: config.DefaultStateDir(os.Getenv),
	})
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r
}

// Start brings the daemon up and returns; it runs in the background.
func (r *runner) Start() error {
	logFileLimit(r.o.log)
	if err := r.checkFiles(r.o.cfg); err != nil {
		return err
	}
	r.warnConfigFile()
	if err := r.d.Apply(r.o.cfg); err != nil {
		return err
	}
	if r.o.socket != "" {
		ln, err := control.Listen(r.o.socket)
		if err != nil {
			r.d.Shutdown(0)
			return err
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := control.Serve(r.ctx, ln, r); err != nil {
				r.o.log.Error().Err(err).Msg("control socket stopped")
			}
		}()
	}
	if err := r.setMetrics(r.o.cfg.MetricsListen); err != nil {
		r.o.log.Error().Err(err).Msg("metrics endpoint not started")
	}
	if r.o.watch && r.o.configPath != "" {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			config.Watch(r.ctx, r.o.configPath, config.WatchOptions{
				Poll: r.o.poll, Loaded: r.o.cfg.Sum,
				OnError: func(err error) { r.o.log.Warn().Err(err).Msg("cannot watch the config file; polling it instead") },
			}, func() { r.Reload() })
		}()
	}
	r.o.log.Info().Str("config", r.o.cfg.File).Int("forwards", len(r.o.cfg.Forwards)).Str("api_url", r.o.cfg.APIURL).
		Str("socket", r.o.socket).Msg("spritefwd running")
	return nil
}

// Stop drains every forward within shutdown_grace; it never exits the process.
func (r *runner) Stop() error {
	r.mu.Lock()
	grace := r.cfg.ShutdownGrace
	r.mu.Unlock()
	r.cancel()
	r.d.Shutdown(grace)
	r.setMetrics("")
	r.wg.Wait()
	return nil
}

// Reload re-reads the config file and applies it if it is valid.
func (r *runner) Reload() control.ReloadResult {
	if r.o.configPath == "" {
		return control.ReloadResult{Errors: []string{"no config file: started with spritefwd forward"}}
	}
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	r.warnConfigFile()
	cfg, err := config.Load(r.o.configPath)
	if err == nil {
		err = r.checkFiles(cfg)
	}
	if err == nil {
		err = r.d.Apply(cfg)
	}
	if err != nil {
		var lines []string
		var es config.Errors
		if errors.As(err, &es) {
			for _, e := range es {
				lines = append(lines, e.Error())
			}
		} else {
			lines = []string{err.Error()}
		}
		for _, l := range lines {
			r.o.log.Error().Msg("config rejected, the running config keeps serving: " + l)
		}
		r.mu.Lock()
		r.rejected, r.rejectedAt = lines, time.Now()
		r.mu.Unlock()
		return control.ReloadResult{Errors: lines}
	}
	r.mu.Lock()
	r.cfg, r.rejected, r.lastReload = cfg, nil, time.Now()
	r.mu.Unlock()
	if err := r.setMetrics(cfg.MetricsListen); err != nil {
		r.o.log.Error().Err(err).Msg("metrics endpoint not started")
	}
	r.o.log.Info().Int("forwards", len(cfg.Forwards)).Msg("config reloaded")
	return control.ReloadResult{OK: true}
}

// setMetrics serves /metrics on addr, moving it if addr changed; "" stops it.
func (r *runner) setMetrics(addr string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if addr == r.metricsWant && (addr == "" || r.metricsSrv != nil) {
		return nil
	}
	if r.metricsSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r.metricsSrv.Shutdown(ctx)
		cancel()
		r.metricsSrv, r.metricsLn = nil, nil
	}
	r.metricsWant = addr
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics_listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", r.m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	r.metricsSrv, r.metricsLn = srv, ln
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		srv.Serve(ln)
	}()
	r.o.log.Info().Str("addr", ln.Addr().String()).Msg("serving Prometheus metrics at /metrics")
	return nil
}

// Carry implements control.Backend: spritefwd stdio's connections.
func (r *runner) Carry(sprite string, port int, c net.Conn, done func(error)) error {
	return r.d.Carry(tunnel.FrontStdio, sprite, port, c, done)
}

// Status implements control.Backend.
func (r *runner) Status() control.Status {
	r.mu.Lock()
	cfg := r.cfg
	st := control.Status{
		Version: versionString(), PID: os.Getpid(), Started: r.started, Config: cfg.File, APIURL: cfg.APIURL,
		LastReload: r.lastReload, Rejected: r.rejected, RejectedAt: r.rejectedAt, SocketPath: r.o.socket,
	}
	if r.metricsLn != nil {
		st.MetricsAddr = r.metricsLn.Addr().String()
	}
	r.mu.Unlock()
	if !svc.Interactive() {
		st.ServiceState = "running under a service manager"
	}
	source, warning := r.d.Token()
	st.TokenSource = source
	if warning != "" {
		st.Warnings = append(st.Warnings, warning)
	}
	if w := configFileWarning(r.o.configPath); w != "" {
		st.Warnings = append(st.Warnings, w)
	}
	st.Forwards = control.ForwardsOf(r.d.Status())
	st.SOCKSAddr = r.d.SOCKSAddr()
	st.Goroutines = runtime.NumGoroutine()
	st.RSSBytes = residentBytes()
	st.HeapBytes, st.GCCycles = liveHeap()
	st.MuxWindowBytes, st.MuxMemory = r.d.MuxWindows()
	return st
}

// liveHeap is what the last GC found reachable. HeapAlloc would also count
// garbage not yet collected, which after a burst of traffic can be as much
// again as the live heap, and made an idle daemon look like it leaked.
// Before the first GC there is no such figure, and HeapAlloc is all live.
func liveHeap() (live, cycles uint64) {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	rtmetrics.Read(s)
	if s[1].Value.Kind() == rtmetrics.KindUint64 {
		cycles = s[1].Value.Uint64()
	}
	if s[0].Value.Kind() == rtmetrics.KindUint64 && s[0].Value.Uint64() > 0 {
		return s[0].Value.Uint64(), cycles
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, cycles
}

// residentBytes reads VmRSS from /proc; 0 where there is no /proc.
func residentBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// checkFiles refuses, when running as root, a config or token file that
// someone else could change; see config.CheckRootFiles.
func (r *runner) checkFiles(cfg *config.Config) error {
	if !r.o.root {
		return nil
	}
	return config.CheckRootFiles(r.o.configPath, cfg.TokenFile, os.Getenv)
}

// warnConfigFile logs configFileWarning, if any: status shows it too, but
// the log is where someone who never runs status will see it.
func (r *runner) warnConfigFile() {
	if w := configFileWarning(r.o.configPath); w != "" {
		r.o.log.Warn().Msg(w)
	}
}

// configFileWarning flags a config others can change: whoever edits it can
// point api_url at their own server and collect the token.
func configFileWarning(path string) string {
	if path == "" {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o022 == 0 {
		return ""
	}
	return fmt.Sprintf("config %s is writable by others (mode %#o), who could redirect the token; run chmod go-w %s", path, fi.Mode().Perm(), path)
}
