// Package control is the daemon's local API: HTTP and JSON over a Unix
// socket that only the daemon's user can open (mode 0600). `spritefwd
// status`, `spritefwd reload` and `spritefwd stdio` (which has the daemon
// carry its connection: see connect.go) are its clients. Nothing here is reachable
// from the network, and nothing it serves contains the token.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Status is what `spritefwd status` shows.
type Status struct {
	Version      string    `json:"version"`
	PID          int       `json:"pid"`
	Started      time.Time `json:"started"`
	Config       string    `json:"config"`
	APIURL       string    `json:"api_url"`
	TokenSource  string    `json:"token_source"`
	Warnings     []string  `json:"warnings,omitempty"`
	LastReload   time.Time `json:"last_reload,omitzero"`
	Rejected     []string  `json:"rejected,omitempty"` // errors of the last edit, if it was rejected
	RejectedAt   time.Time `json:"rejected_at,omitzero"`
	Forwards     []Forward `json:"forwards"`
	SocketPath   string    `json:"socket"`
	MetricsAddr  string    `json:"metrics,omitempty"`
	SOCKSAddr    string    `json:"socks,omitempty"` // where the SOCKS port listens
	ServiceState string    `json:"service,omitempty"`
	Goroutines   int       `json:"goroutines"`
	RSSBytes     int64     `json:"rss_bytes,omitempty"` // resident memory, where the OS reports it
	HeapBytes    uint64    `json:"heap_bytes"`          // live heap after the last GC
	// GCCycles counts completed GCs, so that a reader of HeapBytes can tell
	// whether a GC has run since the moment it cares about.
	GCCycles uint64 `json:"gc_cycles"`
	// MuxWindowBytes is what all mux streams' windows hold now beyond their
	// first 256 KiB each, out of MuxMemory (mux_memory): the part of a
	// bulk transfer's memory that grows with the link.
	MuxWindowBytes int64 `json:"mux_window_bytes"`
	MuxMemory      int64 `json:"mux_memory"`
}

// ReloadResult is the answer to a reload request.
type ReloadResult struct {
	OK     bool     `json:"ok"`
	Errors []string `json:"errors,omitempty"`
}

// Backend is the daemon, as the control API sees it.
type Backend interface {
	Status() Status
	Reload() ReloadResult
	// Carry carries c to port inside sprite (see tunnel.Daemon.Carry):
	// it returns once the connection is open or could not be, and calls
	// done with how an open one ended.
	Carry(sprite string, port int, c net.Conn, done func(error)) error
}

// DefaultSocket is $XDG_RUNTIME_DIR/spritefwd.sock; for root (a system
// service) /run/spritefwd/spritefwd.sock; otherwise a per-user directory
// under the temporary directory. Any user can create that last one first,
// which is why Listen and Client check whose it is before using it.
func DefaultSocket() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "spritefwd.sock")
	}
	if os.Geteuid() == 0 {
		return "/run/spritefwd/spritefwd.sock"
	}
	return filepath.Join(os.TempDir(), "spritefwd-"+strconv.Itoa(os.Geteuid()), "spritefwd.sock")
}

// ErrRunning means another daemon already answers on the socket.
var ErrRunning = errors.New("another spritefwd is already running")

// Listen opens the control socket with mode 0600, in a directory it
// creates with mode 0700, and refuses a directory that is not private to
// this user (see ErrUnsafeDir). A stale socket left by a crash is replaced;
// a live one means another daemon runs, and is left alone.
func Listen(path string) (net.Listener, error) {
	if err := makeDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, ErrRunning)
	}
	_ = os.Remove(path)
	// The umask makes the socket private from its creation, leaving no
	// window in which another user could connect before the chmod.
	old := syscallUmask(0o177)
	ln, err := net.Listen("unix", path)
	syscallUmask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// Serve answers on ln until ctx ends. It always closes ln.
func Serve(ctx context.Context, ln net.Listener, b Backend) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Status())
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		res := b.Reload()
		code := http.StatusOK
		if !res.OK {
			code = http.StatusUnprocessableEntity
		}
		writeJSON(w, code, res)
	})
	// Profiles of the running daemon, for `go tool pprof` or curl
	// --unix-socket; only the daemon's user can open the socket.
	// heap?gc=1 collects garbage first, so the heap it shows is what lives.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	var conns outcomes
	mux.HandleFunc("GET /v1/conns/{id}", func(w http.ResponseWriter, r *http.Request) {
		serveOutcome(w, r, &conns)
	})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			serveConnect(w, r, b, &conns)
			return
		}
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// ErrNotRunning means no daemon answers on the socket.
var ErrNotRunning = errors.New("spritefwd is not running")

// Client talks to a daemon's control socket.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{path: path, http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	body, err := c.fetch(ctx, method, path)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, out)
}

func (c *Client) fetch(ctx context.Context, method, path string) ([]byte, error) {
	// The same check as the daemon's: a socket in a directory someone else
	// controls may be theirs, serving made-up status.
	if err := checkDir(filepath.Dir(c.path)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w (no daemon at %s)", ErrNotRunning, c.path)
		}
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://spritefwd"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no daemon at %s)", ErrNotRunning, c.path)
		}
		return nil, fmt.Errorf("control socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnprocessableEntity {
		return nil, fmt.Errorf("control socket: HTTP %d: %s", resp.StatusCode, body)
	}
	return body, nil
}

// CollectGarbage makes the daemon run a garbage collection, so that the
// heap the next Status reports is what is alive, not what the last burst
// of traffic left for the collector.
func (c *Client) CollectGarbage(ctx context.Context) error {
	_, err := c.fetch(ctx, http.MethodGet, "/debug/pprof/heap?gc=1")
	return err
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", &s)
	return s, err
}

// Reload asks the daemon to re-read its config file now.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var r ReloadResult
	err := c.do(ctx, http.MethodPost, "/v1/reload", &r)
	return r, err
}
