package sprites

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

func TestNoticeSessionID(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Notice
	}{
		{`{"type":"session_info","session_id":28,"command":"python3","tty":false,"is_owner":false}`, Notice{Type: "session_info", SessionID: "28"}},
		{`{"type":"session_info","session_id":"8c1f-2a"}`, Notice{Type: "session_info", SessionID: "8c1f-2a"}},
		{`{"type":"session_info","session_id":"28"}`, Notice{Type: "session_info", SessionID: "28"}},
		{`{"type":"session_info","session_id":null}`, Notice{Type: "session_info"}},
		{`{"type":"session_info"}`, Notice{Type: "session_info"}},
		// An id of another type is dropped, not the notice.
		{`{"type":"session_info","session_id":{"n":1}}`, Notice{Type: "session_info"}},
		{`{"type":"port_opened","port":8080,"address":"10.0.0.1","pid":954}`, Notice{Type: "port_opened", Port: 8080, Address: "10.0.0.1", PID: 954}},
	} {
		var n Notice
		if err := json.Unmarshal([]byte(tt.in), &n); err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if n != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.in, n, tt.want)
		}
	}
	var n Notice
	if err := json.Unmarshal([]byte(`{"type":"exit","exit_code":3}`), &n); err != nil || n.ExitCode == nil || *n.ExitCode != 3 {
		t.Errorf("exit notice: %+v %v", n, err)
	}
	if err := json.Unmarshal([]byte(`[1]`), &n); err == nil {
		t.Error("a notice that is not an object decoded")
	}
}

// TestExecSessionInfo: the emulator sends session_id as a number, the way
// the reference shows it, and the client reads it.
func TestExecSessionInfo(t *testing.T) {
	if _, err := exec.LookPath("true"); err != nil {
		t.Skip("no true(1) to run")
	}
	sim := spritestest.NewServer(spritestest.Options{Token: "t", IdleSleep: -1})
	t.Cleanup(sim.Close)
	sim.CreateSprite("box")
	c := newTestClient(t, sim.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := c.Exec(ctx, "box", ExecOptions{Cmd: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	ev, err := sess.Next(ctx)
	if err != nil || ev.Notice == nil || ev.Notice.Type != "session_info" || ev.Notice.SessionID == "" {
		t.Fatalf("first event %+v %v, want session_info with an id", ev, err)
	}
}

func newTestClient(t *testing.T, url string) *Client {
	t.Helper()
	c, err := New(Options{APIURL: url, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// fsRequest is what a fake server saw of one fs call.
type fsRequest struct {
	method, path, ctype string
	query               map[string]string
	length              int64
	body                string
}

// fakeFS records fs calls and answers each with the status that status
// picks for it (200 if nil). It reads the body of a call it accepts, and
// answers one it refuses at once, the body unread, as net/http's ServeMux
// answers a 405.
func fakeFS(t *testing.T, status func(r *http.Request) int) (*httptest.Server, func() []fsRequest) {
	var mu sync.Mutex
	var seen []fsRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusOK
		if status != nil {
			code = status(r)
		}
		var b []byte
		if code/100 == 2 {
			b, _ = io.ReadAll(r.Body)
		}
		q := map[string]string{}
		for k, v := range r.URL.Query() {
			q[k] = strings.Join(v, ",")
		}
		mu.Lock()
		seen = append(seen, fsRequest{method: r.Method, path: r.URL.Path, ctype: r.Header.Get("Content-Type"), query: q, length: r.ContentLength, body: string(b)})
		mu.Unlock()
		if code/100 != 2 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			io.WriteString(w, `{"error":"refused by the fake"}`)
			return
		}
		w.WriteHeader(code)
		io.WriteString(w, "content")
	}))
	t.Cleanup(srv.Close)
	return srv, func() []fsRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]fsRequest(nil), seen...)
	}
}

// TestWriteFileRequest: WriteFile sends what the official SDK sends.
func TestWriteFileRequest(t *testing.T) {
	for _, tt := range []struct {
		name string
		path string
		mode os.FileMode
		want map[string]string
	}{
		{"agent binary", "/tmp/spritefwd/spritefwd-agent", 0o755, map[string]string{"path": "/tmp/spritefwd/spritefwd-agent", "workingDir": "/", "mode": "0755", "mkdirParents": "true"}},
		{"secret", "/tmp/spritefwd/secret", 0o600, map[string]string{"path": "/tmp/spritefwd/secret", "workingDir": "/", "mode": "0600", "mkdirParents": "true"}},
		{"relative, setuid not sent", "notes", 0o700 | os.ModeSetuid, map[string]string{"path": "notes", "workingDir": "/", "mode": "0700", "mkdirParents": "true"}},
		{"all zero", "/z", 0, map[string]string{"path": "/z", "workingDir": "/", "mode": "0000", "mkdirParents": "true"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, seen := fakeFS(t, nil)
			c := newTestClient(t, srv.URL)
			if err := c.WriteFile(context.Background(), "box", tt.path, tt.mode, strings.NewReader("payload")); err != nil {
				t.Fatal(err)
			}
			got := seen()
			if len(got) != 1 {
				t.Fatalf("%d requests, want 1", len(got))
			}
			r := got[0]
			if r.method != http.MethodPut || r.path != "/v1/sprites/box/fs/write" || r.ctype != "application/octet-stream" || r.body != "payload" || r.length != 7 {
				t.Errorf("request %+v", r)
			}
			if len(r.query) != len(tt.want) {
				t.Errorf("query %v, want %v", r.query, tt.want)
			}
			for k, v := range tt.want {
				if r.query[k] != v {
					t.Errorf("%s=%q, want %q", k, r.query[k], v)
				}
			}
		})
	}
}

func TestWriteFileStatus(t *testing.T) {
	for _, tt := range []struct {
		status int
		ok     bool
		cause  error
	}{
		{200, true, nil},
		{201, true, nil},
		{204, false, ErrProtocol}, // the SDK counts only 200 and 201 as written
		{400, false, ErrBadRequest},
		{404, false, ErrNotFound},
		{503, false, ErrWaking},
	} {
		srv, _ := fakeFS(t, func(*http.Request) int { return tt.status })
		err := newTestClient(t, srv.URL).WriteFile(context.Background(), "box", "/f", 0o644, strings.NewReader("x"))
		if (err == nil) != tt.ok || (tt.cause != nil && !errors.Is(err, tt.cause)) {
			t.Errorf("HTTP %d: %v, want ok %v, cause %v", tt.status, err, tt.ok, tt.cause)
		}
		if err != nil && !strings.Contains(err.Error(), "sprite box") {
			t.Errorf("HTTP %d: %q does not name the sprite", tt.status, err)
		}
	}
}

// onlyReader hides every method but Read: a body that cannot seek.
type onlyReader struct{ io.Reader }

// TestWriteFileFallsBackToPOST: a server that refuses PUT with 405 gets
// the same call as POST, with the whole body again: an *os.File from where
// it stood (and left open), any other reader from memory.
func TestWriteFileFallsBackToPOST(t *testing.T) {
	// 16 MiB, as large as the daemon's own binary: its PUT is still being
	// sent when the 405 comes back.
	content := bytes.Repeat([]byte("0123456789abcdef"), 1<<20)
	file := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(file, append([]byte("HEADER"), content...), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		body    func(t *testing.T) io.Reader
		want    []byte
		length  int64 // as sent: -1 when unknown
		refused bool  // too large to hold and not seekable: cannot be sent twice
	}{
		{"file, after a header", func(t *testing.T) io.Reader {
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					t.Errorf("WriteFile closed the caller's file: %v", err)
				}
				f.Close()
			})
			f.Seek(6, io.SeekStart) // the caller already read a header
			return f
		}, content, int64(len(content)), false},
		{"strings.Reader", func(*testing.T) io.Reader { return strings.NewReader("secret\n") }, []byte("secret\n"), 7, false},
		{"small, not seekable", func(*testing.T) io.Reader { return onlyReader{strings.NewReader("secret\n")} }, []byte("secret\n"), 7, false},
		{"empty", func(*testing.T) io.Reader { return onlyReader{strings.NewReader("")} }, nil, 0, false},
		{"large, not seekable", func(*testing.T) io.Reader { return onlyReader{bytes.NewReader(content[:maxBufferedUpload+1])} }, content[:maxBufferedUpload+1], -1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, seen := fakeFS(t, func(r *http.Request) int {
				if r.Method == http.MethodPut {
					return http.StatusMethodNotAllowed
				}
				return http.StatusCreated
			})
			c := newTestClient(t, srv.URL)
			err := c.WriteFile(context.Background(), "box", "/tmp/spritefwd/agent", 0o755, tt.body(t))
			got := seen()
			if tt.refused {
				if err == nil || !strings.Contains(err.Error(), "cannot be sent again") || len(got) != 1 {
					t.Fatalf("%v after %d requests, want a refusal to resend after the PUT", err, len(got))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[0].method != http.MethodPut || got[1].method != http.MethodPost {
				t.Fatalf("requests %d, want PUT then POST", len(got))
			}
			post := got[1]
			if post.body != string(tt.want) || post.length != tt.length || post.query["workingDir"] != "/" || post.query["mode"] != "0755" {
				t.Errorf("POST sent %d bytes (Content-Length %d), query %v; want %d bytes", len(post.body), post.length, post.query, len(tt.want))
			}
		})
	}
}

// TestUploadFencesEarlierSend: the HTTP client may still be reading the
// refused PUT's body when the POST starts (it closes that connection, but
// a file read under way finishes). Once the PUT's call is over its reader
// is fenced, so it cannot move the file's offset under the POST.
func TestUploadFencesEarlierSend(t *testing.T) {
	content := []byte("0123456789abcdefghij")
	file := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(file, content, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	up, err := newUpload(f)
	if err != nil {
		t.Fatal(err)
	}
	put, _, err := up.open()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	put.Read(buf) // the PUT's send has begun
	up.done()     // its answer came: 405
	post, size, err := up.open()
	if err != nil || size != int64(len(content)) {
		t.Fatalf("open again: %d %v", size, err)
	}
	if n, err := put.Read(buf); n != 0 || !errors.Is(err, errFenced) {
		t.Errorf("the PUT's reader read %d bytes after its call (%v), want errFenced", n, err)
	}
	if got, err := io.ReadAll(post); err != nil || !bytes.Equal(got, content) {
		t.Errorf("the POST read %q %v, want %q", got, err, content)
	}
}

// TestWriteFileRemembersPOST: once a server has refused PUT, later calls
// go straight to POST.
func TestWriteFileRemembersPOST(t *testing.T) {
	srv, seen := fakeFS(t, func(r *http.Request) int {
		if r.Method == http.MethodPut {
			return http.StatusMethodNotAllowed
		}
		return http.StatusOK
	})
	c := newTestClient(t, srv.URL)
	for range 3 {
		if err := c.WriteFile(context.Background(), "box", "/f", 0o644, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
	}
	var methods []string
	for _, r := range seen() {
		methods = append(methods, r.method)
	}
	if strings.Join(methods, " ") != "PUT POST POST POST" {
		t.Errorf("methods %v, want one PUT, then POST only", methods)
	}

	// Both refused: the 405 is the error, and nothing is remembered.
	srv, _ = fakeFS(t, func(*http.Request) int { return http.StatusMethodNotAllowed })
	c = newTestClient(t, srv.URL)
	err := c.WriteFile(context.Background(), "box", "/f", 0o644, strings.NewReader("x"))
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusMethodNotAllowed || c.writePOST.Load() {
		t.Errorf("%v (remembered POST: %v), want the 405", err, c.writePOST.Load())
	}
}

func TestReadFileRequest(t *testing.T) {
	srv, seen := fakeFS(t, nil)
	b, err := newTestClient(t, srv.URL).ReadFile(context.Background(), "box", "/tmp/spritefwd/secret")
	if err != nil || string(b) != "content" {
		t.Fatalf("%q %v", b, err)
	}
	r := seen()[0]
	if r.method != http.MethodGet || r.path != "/v1/sprites/box/fs/read" || r.query["path"] != "/tmp/spritefwd/secret" || r.query["workingDir"] != "/" {
		t.Errorf("request %+v", r)
	}
}

// TestFileRoundTripThroughEmulator: the emulator, which requires
// workingDir on PUT and creates parents only when asked, takes what the
// client sends, and an *os.File body arrives whole.
func TestFileRoundTripThroughEmulator(t *testing.T) {
	sim := spritestest.NewServer(spritestest.Options{Token: "t", IdleSleep: -1})
	t.Cleanup(sim.Close)
	sim.CreateSprite("box")
	c := newTestClient(t, sim.URL)
	ctx := context.Background()
	bin := bytes.Repeat([]byte{0x7f, 'E', 'L', 'F'}, 1<<17)
	file := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(file, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tt := range []struct {
		write, read string
		body        io.Reader
		want        []byte
	}{
		{"/tmp/spritefwd/new/dir/agent", "/tmp/spritefwd/new/dir/agent", f, bin},
		{"rel/secret", "/rel/secret", strings.NewReader("s3cr3t\n"), []byte("s3cr3t\n")},
	} {
		if err := c.WriteFile(ctx, "box", tt.write, 0o600, tt.body); err != nil {
			t.Fatalf("write %s: %v", tt.write, err)
		}
		got, err := c.ReadFile(ctx, "box", tt.read)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("read %s: %d bytes, %v; want %d bytes", tt.read, len(got), err, len(tt.want))
		}
	}
	if _, err := c.ReadFile(ctx, "box", "/nope"); !IsNotFound(err) {
		t.Errorf("missing file: %v, want a 404", err)
	}
}

// TestExecReadLimit: a message up to MaxExecMessage is read; a larger one
// ends the session with a protocol error instead of being buffered whole.
func TestExecReadLimit(t *testing.T) {
	for _, tt := range []struct {
		size int
		ok   bool
	}{
		{32 << 10, true},
		{MaxExecMessage, true},
		{MaxExecMessage + 1, false},
		{3 * MaxExecMessage, false},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer ws.CloseNow()
			msg := bytes.Repeat([]byte{'x'}, tt.size)
			msg[0] = StreamStdout
			ws.Write(r.Context(), websocket.MessageBinary, msg)
			ws.Write(r.Context(), websocket.MessageBinary, []byte{StreamExit, 0})
			ws.Read(r.Context()) // until the client goes
		}))
		c := newTestClient(t, srv.URL)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		sess, err := c.Exec(ctx, "box", ExecOptions{Cmd: []string{"cat"}})
		if err != nil {
			t.Fatal(err)
		}
		ev, err := sess.Next(ctx)
		if tt.ok {
			if err != nil || ev.Stream != StreamStdout || len(ev.Data) != tt.size-1 {
				t.Errorf("%d bytes: got %d bytes on stream %d, %v; want them read", tt.size, len(ev.Data), ev.Stream, err)
			}
		} else if !errors.Is(err, ErrProtocol) || ClassOf(err) != Permanent || !strings.Contains(err.Error(), "larger than 4194304 bytes") {
			t.Errorf("%d bytes: got %d bytes, %v; want a permanent protocol error naming the limit", tt.size, len(ev.Data), err)
		}
		sess.Close()
		cancel()
		srv.Close()
	}
}
