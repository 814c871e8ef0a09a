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
	"strconv"
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
}

// ExecSession is a command running in a sprite, attached.
type ExecSession struct {
	ws     *websocket.Conn
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
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			class, cause := classifyStatus(resp.StatusCode)
			return nil, &Error{Op: "exec", Sprite: sprite, Class: class, Status: resp.StatusCode, Reason: ErrorBody(body), Err: cause}
		}
		if tlsErr := certError(err); tlsErr != nil {
			return nil, &Error{Op: "exec", Sprite: sprite, Class: Permanent, Err: fmt.Errorf("%w: %v", ErrTLS, tlsErr)}
		}
		return nil, &Error{Op: "exec", Sprite: sprite, Class: Retryable, Err: dialCause(hctx, err)}
	}
	ws.SetReadLimit(-1)
	return &ExecSession{ws: ws}, nil
}

// Next returns the command's next event. After the exit it returns io.EOF.
func (e *ExecSession) Next(ctx context.Context) (ExecEvent, error) {
	for {
		typ, msg, err := e.ws.Read(ctx)
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

// WriteFile uploads body to path inside the sprite with the given mode
// (POST fs/write?path=&mode=; the reference leaves the parameters open, and
// the emulator documents this choice).
func (c *Client) WriteFile(ctx context.Context, sprite, path string, mode os.FileMode, body io.Reader) error {
	q := url.Values{"path": {path}, "mode": {"0" + strconv.FormatUint(uint64(mode.Perm()), 8)}}
	_, err := c.raw(ctx, "fs/write", sprite, http.MethodPost, body, q, 10*time.Minute, "v1", "sprites", sprite, "fs", "write")
	return err
}

// ReadFile returns the file at path inside the sprite (at most 1 MiB).
// A missing file is an *Error with Status 404.
func (c *Client) ReadFile(ctx context.Context, sprite, path string) ([]byte, error) {
	return c.raw(ctx, "fs/read", sprite, http.MethodGet, nil, url.Values{"path": {path}}, c.request, "v1", "sprites", sprite, "fs", "read")
}

// IsNotFound reports a 404: no such sprite, or no such file.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

func (c *Client) raw(ctx context.Context, op, sprite, method string, body io.Reader, q url.Values, timeout time.Duration, elem ...string) ([]byte, error) {
	fail := func(class Class, cause error, status int, reason string) error {
		return &Error{Op: op, Sprite: sprite, Class: class, Status: status, Reason: reason, Err: cause}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint(false, elem...)+"?"+q.Encode(), body)
	if err != nil {
		return nil, fail(Permanent, err, 0, "")
	}
	req.Header = c.header()
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if tlsErr := certError(err); tlsErr != nil {
			return nil, fail(Permanent, fmt.Errorf("%w: %v", ErrTLS, tlsErr), 0, "")
		}
		return nil, fail(Retryable, dialCause(ctx, err), 0, "")
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return nil, fail(Retryable, fmt.Errorf("%w: reading response: %v", ErrNetwork, err), resp.StatusCode, "")
	}
	if resp.StatusCode/100 != 2 {
		class, cause := classifyStatus(resp.StatusCode)
		return nil, fail(class, cause, resp.StatusCode, ErrorBody(buf.Bytes()))
	}
	return buf.Bytes(), nil
}
