package sprites

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Exec stream ids: the first byte of each binary message (non-TTY mode).
const (
	StreamStdin    byte = 0
	StreamStdout   byte = 1
	StreamStderr   byte = 2
	StreamExit     byte = 3
	StreamStdinEOF byte = 4
)

// ExecOptions describe a command to run inside a sprite. Never put secrets
// in Env or Cmd: they travel in the query string, which proxies may log.
// Pass them on stdin or in a file written with WriteFile.
type ExecOptions struct {
	Cmd   []string
	Dir   string
	Env   []string
	Stdin bool
	// KeepRunning lets the command outlive the WebSocket for good
	// (max_run_after_disconnect=0); otherwise the API's default applies.
	KeepRunning bool
}

// ExecEvent is one thing a running command said.
type ExecEvent struct {
	Stream byte   // StreamStdout or StreamStderr, with Data; 0 for others
	Data   []byte // output
	Exited bool   // the command ended with Code
	Code   int
	Notice *Notice // port_opened, port_closed, session_info
}

// Notice is a JSON message on an exec WebSocket.
type Notice struct {
	Type     string `json:"type"`
	Port     int    `json:"port,omitempty"`
	Address  string `json:"address,omitempty"`
	PID      int    `json:"pid,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	// SessionID comes with session_info. The API reference shows a number
	// and the official SDK reads a string, so both are accepted; a number
	// keeps the digits it was sent with.
	SessionID string `json:"session_id,omitempty"`
}

// UnmarshalJSON accepts session_id as a number or a string. A session_id
// of any other type is dropped rather than failing the whole notice: an
// exit or a port_opened matters more than the id that came with it.
func (n *Notice) UnmarshalJSON(b []byte) error {
	type plain Notice // without this method, so no recursion
	var v struct {
		plain
		SessionID json.RawMessage `json:"session_id"` // shadows plain's
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*n = Notice(v.plain)
	n.SessionID = ""
	var s string
	var num json.Number
	switch {
	case json.Unmarshal(v.SessionID, &s) == nil:
		n.SessionID = s
	case json.Unmarshal(v.SessionID, &num) == nil:
		n.SessionID = num.String()
	}
	return nil
}

// MaxExecMessage bounds one message read from an exec WebSocket, each of
// which is held whole in memory. The service sends output in messages of
// at most 32 KiB; a larger one is not the Sprites API, and must not make
// the daemon allocate whatever a server or a proxy on the way chooses.
const MaxExecMessage = 4 << 20

// ExecSession is a command running in a sprite, attached.
type ExecSession struct {
	ws     *websocket.Conn
	sprite string
	exited bool
}

// Exec starts a command in a sprite and attaches to it.
func (c *Client) Exec(ctx context.Context, sprite string, o ExecOptions) (*ExecSession, error) {
	if len(o.Cmd) == 0 {
		return nil, &Error{Op: "exec", Sprite: sprite, Class: Permanent, Err: fmt.Errorf("%w: no command", ErrBadRequest)}
	}
	q := url.Values{"cmd": o.Cmd}
	if o.Dir != "" {
		q.Set("dir", o.Dir)
	}
	for _, e := range o.Env {
		q.Add("env", e)
	}
	if o.Stdin {
		q.Set("stdin", "true")
	}
	if o.KeepRunning {
		q.Set("max_run_after_disconnect", "0")
	}
	hctx, cancel := context.WithTimeout(ctx, c.handshake)
	defer cancel()
	ws, resp, err := websocket.Dial(hctx, c.endpoint(true, "v1", "sprites", sprite, "exec")+"?"+q.Encode(), &websocket.DialOptions{
		HTTPClient: c.http, HTTPHeader: c.header(),
	})
	if err != nil {
		return nil, callError(ctx, hctx, Error{Op: "exec", Sprite: sprite}, resp, http.StatusSwitchingProtocols, err)
	}
	ws.SetReadLimit(MaxExecMessage)
	return &ExecSession{ws: ws, sprite: sprite}, nil
}

// Next returns the command's next event. After the exit it returns io.EOF.
func (e *ExecSession) Next(ctx context.Context) (ExecEvent, error) {
	for {
		typ, msg, err := e.ws.Read(ctx)
		if errors.Is(err, websocket.ErrMessageTooBig) {
			// The library has closed the WebSocket with 1009 already.
			return ExecEvent{}, &Error{Op: "exec", Sprite: e.sprite, Class: Permanent,
				Err: fmt.Errorf("%w: a message larger than %d bytes, where the service sends at most 32 KiB; check that api_url is the Sprites API: %w", ErrProtocol, MaxExecMessage, err)}
		}
		if err != nil {
			if e.exited || websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				return ExecEvent{}, io.EOF
			}
			return ExecEvent{}, err
		}
		if typ == websocket.MessageText {
			var n Notice
			if json.Unmarshal(msg, &n) != nil {
				continue
			}
			if n.Type == "exit" && n.ExitCode != nil {
				if e.exited {
					continue // the exit frame came first
				}
				e.exited = true
				return ExecEvent{Exited: true, Code: *n.ExitCode}, nil
			}
			return ExecEvent{Notice: &n}, nil
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case StreamStdout, StreamStderr:
			return ExecEvent{Stream: msg[0], Data: msg[1:]}, nil
		case StreamExit:
			if e.exited {
				continue
			}
			e.exited = true
			code := 0
			if len(msg) > 1 {
				code = int(msg[1])
			}
			return ExecEvent{Exited: true, Code: code}, nil
		}
	}
}

// WriteStdin sends p to the command's stdin.
func (e *ExecSession) WriteStdin(ctx context.Context, p []byte) error {
	return e.ws.Write(ctx, websocket.MessageBinary, append([]byte{StreamStdin}, p...))
}

// CloseStdin sends EOF on the command's stdin.
func (e *ExecSession) CloseStdin(ctx context.Context) error {
	return e.ws.Write(ctx, websocket.MessageBinary, []byte{StreamStdinEOF})
}

// Close detaches. A command started with KeepRunning goes on.
func (e *ExecSession) Close() error { return e.ws.CloseNow() }

// fsWorkingDir is the workingDir of every fs call: the official SDK's
// default (Sprite.Filesystem), against which a relative path resolves.
const fsWorkingDir = "/"

// maxBufferedUpload bounds how much of a body that cannot seek WriteFile
// holds in memory so that it can send it again after a 405. Larger bodies
// should be an io.ReadSeeker, as an *os.File is.
const maxBufferedUpload = 1 << 20

// WriteFile uploads body to path inside the sprite with the given mode,
// creating missing parent directories. It sends what the official SDK
// sends: PUT fs/write?path=&workingDir=/&mode=0644&mkdirParents=true. A
// server that answers 405 gets the same call as POST, the method the API
// reference lists. A relative path resolves against "/".
//
// To send body a second time WriteFile rewinds it if it is an
// io.ReadSeeker (from where it stood) and otherwise holds up to 1 MiB of it
// in memory. It never closes body.
func (c *Client) WriteFile(ctx context.Context, sprite, path string, mode os.FileMode, body io.Reader) error {
	return c.writeFile(ctx, sprite, path, mode, body, &c.writePOST)
}

// writeFile is WriteFile. When post is not nil it remembers that the
// server wants POST, so that later calls skip the PUT that would fail.
func (c *Client) writeFile(ctx context.Context, sprite, path string, mode os.FileMode, body io.Reader, post *atomic.Bool) error {
	const op = "fs/write"
	fail := func(class Class, cause error) error {
		return &Error{Op: op, Sprite: sprite, Class: class, Err: cause}
	}
	up, err := newUpload(body)
	if err != nil {
		return fail(Permanent, fmt.Errorf("%w: reading what to write to %s: %v", ErrBadRequest, path, err))
	}
	q := url.Values{
		"path":         {path},
		"workingDir":   {fsWorkingDir},
		"mode":         {fmt.Sprintf("%04o", mode.Perm())},
		"mkdirParents": {"true"},
	}
	send := func(method string) (int, error) {
		_, status, err := c.raw(ctx, op, sprite, method, up, q, 10*time.Minute, "v1", "sprites", sprite, "fs", "write")
		if err == nil && status != http.StatusOK && status != http.StatusCreated {
			// The SDK counts only these as written; a 202 or 204 may not be.
			return status, &Error{Op: op, Sprite: sprite, Class: Permanent, Status: status, Err: fmt.Errorf("%w: HTTP %d, want 200 or 201", ErrProtocol, status)}
		}
		return status, err
	}
	if post != nil && post.Load() {
		_, err := send(http.MethodPost)
		return err
	}
	status, err := send(http.MethodPut)
	if status != http.StatusMethodNotAllowed {
		return err
	}
	if !up.resendable() {
		return fail(Permanent, fmt.Errorf("%w: the server wants POST, and the body (over %d bytes, not seekable) cannot be sent again", ErrBadRequest, maxBufferedUpload))
	}
	if _, err := send(http.MethodPost); err != nil {
		return err
	}
	if post != nil {
		post.Store(true)
	}
	return nil
}

// upload is a request body that can be sent more than once.
type upload struct {
	r     io.ReadSeeker // nil: no body
	start int64         // where r stood when WriteFile was called
	size  int64         // -1: unknown, because rest follows r
	rest  io.Reader     // what did not fit in the buffer; read at most once
	sent  bool
	cur   *fencedReader // what the current request reads
}

// errFenced ends a request body's reads once its call is over.
var errFenced = errors.New("request body no longer available: the call is over")

// fencedReader is a request body that stops reading once its call is
// over. The HTTP client goes on sending a body after the response has come
// (a 405 arrives long before a 16 MB body is sent), so without the fence
// that send and the retry would read the same file at once.
type fencedReader struct {
	mu     sync.Mutex
	r      io.Reader
	fenced bool
}

func (f *fencedReader) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fenced {
		return 0, errFenced
	}
	return f.r.Read(p)
}

// fence returns once no Read is in progress, and no other will start.
func (f *fencedReader) fence() {
	f.mu.Lock()
	f.fenced = true
	f.mu.Unlock()
}

// newUpload prepares body for sending, once or more. A seekable body is
// measured (so the request has a Content-Length) and rewound each time;
// another is read into memory, up to maxBufferedUpload.
func newUpload(body io.Reader) (*upload, error) {
	if body == nil {
		return &upload{}, nil
	}
	if rs, ok := body.(io.ReadSeeker); ok {
		// A pipe is an *os.File too, and fails the first Seek without
		// having read anything: it is buffered like any other reader.
		if start, err := rs.Seek(0, io.SeekCurrent); err == nil {
			if end, err := rs.Seek(0, io.SeekEnd); err == nil {
				if _, err := rs.Seek(start, io.SeekStart); err != nil {
					return nil, err
				}
				return &upload{r: rs, start: start, size: end - start}, nil
			}
		}
	}
	buf, err := io.ReadAll(io.LimitReader(body, maxBufferedUpload+1))
	if err != nil {
		return nil, err
	}
	if len(buf) <= maxBufferedUpload {
		return &upload{r: bytes.NewReader(buf), size: int64(len(buf))}, nil
	}
	return &upload{r: bytes.NewReader(buf), size: -1, rest: body}, nil
}

func (u *upload) resendable() bool { return u.rest == nil }

// open rewinds the body and returns it with its length (-1 if unknown).
// The reader is never an io.Closer, so that the HTTP client, which closes
// a request's body, leaves the caller's file open for a second send. The
// caller must call done when the call is over.
func (u *upload) open() (io.Reader, int64, error) {
	if u.r == nil {
		return nil, 0, nil
	}
	if u.sent && !u.resendable() {
		return nil, 0, errors.New("the body was already sent")
	}
	u.done() // should a caller have forgotten: never two readers at once
	u.sent = true
	if _, err := u.r.Seek(u.start, io.SeekStart); err != nil {
		return nil, 0, err
	}
	var r io.Reader = io.LimitReader(u.r, u.size)
	if u.rest != nil {
		r = io.MultiReader(u.r, u.rest)
	}
	u.cur = &fencedReader{r: r}
	return u.cur, u.size, nil
}

// done ends the current request's reads of the body.
func (u *upload) done() {
	if u.cur != nil {
		u.cur.fence()
	}
}

// ReadFile returns the file at path inside the sprite (at most 1 MiB).
// A relative path resolves against "/". A missing file is an *Error with
// Status 404.
func (c *Client) ReadFile(ctx context.Context, sprite, path string) ([]byte, error) {
	q := url.Values{"path": {path}, "workingDir": {fsWorkingDir}}
	b, _, err := c.raw(ctx, "fs/read", sprite, http.MethodGet, nil, q, c.request, "v1", "sprites", sprite, "fs", "read")
	return b, err
}

// IsNotFound reports a 404: no such sprite, or no such file.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// raw sends one REST call whose body, if up is not nil, is octet-stream.
// It returns the response body and status; any status but 2xx is an error.
func (c *Client) raw(ctx context.Context, op, sprite, method string, up *upload, q url.Values, timeout time.Duration, elem ...string) ([]byte, int, error) {
	fail := func(class Class, cause error, status int, reason string) error {
		return &Error{Op: op, Sprite: sprite, Class: class, Status: status, Reason: reason, Err: cause}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	size := int64(0)
	if up != nil {
		var err error
		if body, size, err = up.open(); err != nil {
			return nil, 0, fail(Permanent, fmt.Errorf("%w: %v", ErrBadRequest, err), 0, "")
		}
		defer up.done()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint(false, elem...)+"?"+q.Encode(), body)
	if err != nil {
		return nil, 0, fail(Permanent, err, 0, "")
	}
	req.Header = c.header()
	if up != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody // an empty file, sent as such rather than probed
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, callError(parent, ctx, Error{Op: op, Sprite: sprite}, nil, 0, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, resp.StatusCode, callError(parent, ctx, Error{Op: op, Sprite: sprite}, resp, http.StatusOK, nil)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return nil, resp.StatusCode, fail(Retryable, fmt.Errorf("%w: reading response: %v", ErrNetwork, err), resp.StatusCode, "")
	}
	return buf.Bytes(), resp.StatusCode, nil
}

// ErrOutputTooLong: a command printed more than Output was told to keep.
var ErrOutputTooLong = errors.New("command output over the limit")

// Output runs a short command in a sprite and returns its stdout, at most
// limit bytes, and its exit code. Output beyond limit fails the call with
// ErrOutputTooLong rather than be cut silently.
func (c *Client) Output(ctx context.Context, sprite string, cmd []string, limit int) ([]byte, int, error) {
	sess, err := c.Exec(ctx, sprite, ExecOptions{Cmd: cmd})
	if err != nil {
		return nil, 0, err
	}
	defer sess.Close()
	var out []byte
	for {
		ev, err := sess.Next(ctx)
		if err != nil {
			return out, 0, fmt.Errorf("exec %s on sprite %s: %w", cmd[0], sprite, err)
		}
		if ev.Exited {
			return out, ev.Code, nil
		}
		if ev.Stream == StreamStdout {
			if len(out)+len(ev.Data) > limit {
				return out, 0, fmt.Errorf("exec %s on sprite %s: %w (%d bytes)", cmd[0], sprite, ErrOutputTooLong, limit)
			}
			out = append(out, ev.Data...)
		}
	}
}
