package control

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spritefwd/spritefwd/sock"
)

// A front that has no listener of its own (spritefwd stdio) asks the
// daemon for a connection with "CONNECT sprite:port" and a connection id
// it made up. The daemon answers 200 at once and hijacks the socket, which
// from then on carries the connection's bytes, half-closes included. A
// Unix socket cannot carry a reset, so how the connection ended is asked
// for afterwards: GET /v1/conns/{id} answers once it has ended.

// connHeader carries the id the client made up for its connection.
const connHeader = "Spritefwd-Conn"

// outcomeKeep is how long the end of a connection is kept for its client
// to ask; it asks as soon as it reads EOF.
const outcomeKeep = time.Minute

// Outcome is how a connection asked for over the socket ended.
type Outcome struct {
	Done  bool   `json:"done"`
	Error string `json:"error,omitempty"` // empty for a clean end
}

type outcome struct {
	done chan struct{}
	err  error
}

// outcomes are the connections asked for over the socket, by id.
type outcomes struct {
	mu sync.Mutex
	m  map[string]*outcome
}

func (o *outcomes) add(id string) (*outcome, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[string]*outcome{}
	}
	if _, dup := o.m[id]; dup {
		return nil, false
	}
	oc := &outcome{done: make(chan struct{})}
	o.m[id] = oc
	return oc, true
}

func (o *outcomes) finish(id string, oc *outcome, err error) {
	oc.err = err
	close(oc.done)
	time.AfterFunc(outcomeKeep, func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.m[id] == oc {
			delete(o.m, id)
		}
	})
}

func (o *outcomes) get(id string) *outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m[id]
}

var (
	spriteName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	connID     = regexp.MustCompile(`^[0-9a-f]{16,64}$`)
)

// ParseTarget reads "sprite:port" as a front names its destination.
func ParseTarget(s string) (sprite string, port int, err error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("want SPRITE:PORT, not %q", s)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("port %q: want 1-65535", p)
	}
	if !spriteName.MatchString(host) {
		return "", 0, fmt.Errorf("sprite name %q: want letters, digits, '.', '_' and '-'", host)
	}
	return host, n, nil
}

// serveConnect answers a CONNECT: the daemon carries the hijacked socket.
func serveConnect(w http.ResponseWriter, r *http.Request, b Backend, o *outcomes) {
	sprite, port, err := ParseTarget(r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := r.Header.Get(connHeader)
	if !connID.MatchString(id) {
		http.Error(w, "missing or malformed "+connHeader+" header", http.StatusBadRequest)
		return
	}
	oc, ok := o.add(id)
	if !ok {
		http.Error(w, "connection id already used", http.StatusConflict)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		o.finish(id, oc, errors.New("the control socket cannot hand over connections"))
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		o.finish(id, oc, err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		c.Close()
		o.finish(id, oc, err)
		return
	}
	local := sock.WithoutHalfClose(c)
	if brw.Reader.Buffered() > 0 {
		local = &bufferedConn{Conn: local, r: io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), local)}
	}
	if err := b.Carry(sprite, port, local, func(err error) { o.finish(id, oc, err) }); err != nil {
		o.finish(id, oc, err)
	}
}

// serveOutcome answers GET /v1/conns/{id} once the connection has ended,
// or with done false if it has not within the request's time.
func serveOutcome(w http.ResponseWriter, r *http.Request, o *outcomes) {
	oc := o.get(r.PathValue("id"))
	if oc == nil {
		http.Error(w, "no such connection", http.StatusNotFound)
		return
	}
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-oc.done:
	case <-t.C:
		writeJSON(w, http.StatusOK, Outcome{})
		return
	case <-r.Context().Done():
		return
	}
	out := Outcome{Done: true}
	if oc.err != nil {
		out.Error = oc.err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

// bufferedConn reads what the HTTP server had buffered before the socket.
type bufferedConn struct {
	sock.Conn
	r io.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Conn is a connection the daemon carries for this client. Read, Write and
// CloseWrite carry the bytes; End says how the connection ended.
type Conn struct {
	*net.UnixConn
	r      *bufio.Reader
	id     string
	client *Client
}

func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// End waits for the daemon to say how the connection ended: nil for a
// clean end, else what broke it. Call it after Read returned EOF.
func (c *Conn) End(ctx context.Context) error {
	for {
		var out Outcome
		if err := c.client.do(ctx, http.MethodGet, "/v1/conns/"+c.id, &out); err != nil {
			return fmt.Errorf("could not learn how the connection ended: %w", err)
		}
		if out.Done {
			if out.Error != "" {
				return errors.New(out.Error)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// ErrRefused is a CONNECT the daemon refused; the message says why.
var ErrRefused = errors.New("the daemon refused the connection")

// Connect asks the daemon for a connection to port inside sprite, carried
// as its fronts carry theirs. It fails with ErrNotRunning when no daemon
// answers.
func (c *Client) Connect(ctx context.Context, sprite string, port int) (*Conn, error) {
	if err := checkDir(filepath.Dir(c.path)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w (no daemon at %s)", ErrNotRunning, c.path)
		}
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no daemon at %s)", ErrNotRunning, c.path)
		}
		return nil, fmt.Errorf("control socket %s: %w", c.path, err)
	}
	uc := nc.(*net.UnixConn)
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	target := net.JoinHostPort(sprite, strconv.Itoa(port))
	stop := context.AfterFunc(ctx, func() { uc.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintf(uc, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s: %s\r\n\r\n", target, target, connHeader, id); err != nil {
		uc.Close()
		return nil, fmt.Errorf("control socket %s: %w", c.path, err)
	}
	br := bufio.NewReader(uc)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("control socket %s: %w", c.path, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		uc.Close()
		return nil, fmt.Errorf("%w: %s", ErrRefused, strings.TrimSpace(string(body)))
	}
	if !stop() {
		uc.Close()
		return nil, ctx.Err()
	}
	return &Conn{UnixConn: uc, r: br, id: id, client: c}, nil
}
