package spritestest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spriteRoot is where box's files live on this machine.
func spriteRoot(t *testing.T, s *Server) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	root, err := s.rootLocked(s.sprites["box"])
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestFSWrite(t *testing.T) {
	for _, tt := range []struct {
		name   string
		method string
		q      url.Values
		status int
		file   string // where the body lands inside the sprite, when it is written
		mode   os.FileMode
		errHas string // in the JSON error, when it is not
	}{
		{name: "as the SDK sends it", method: http.MethodPut,
			q:      url.Values{"path": {"/opt/agent/bin"}, "workingDir": {"/"}, "mode": {"0755"}, "mkdirParents": {"true"}},
			status: 200, file: "/opt/agent/bin", mode: 0o755},
		{name: "relative to workingDir", method: http.MethodPut,
			q:      url.Values{"path": {"conf/app.env"}, "workingDir": {"/home/sprite"}, "mode": {"0600"}, "mkdirParents": {"true"}},
			status: 200, file: "/home/sprite/conf/app.env", mode: 0o600},
		{name: "POST as the reference lists it", method: http.MethodPost,
			q:      url.Values{"path": {"notes.txt"}, "mkdirParents": {"true"}},
			status: 200, file: "/notes.txt", mode: 0o644},
		{name: "PUT without workingDir", method: http.MethodPut,
			q:      url.Values{"path": {"/a.txt"}, "mkdirParents": {"true"}},
			status: 400, errHas: "workingDir is required"},
		{name: "missing parent without mkdirParents", method: http.MethodPut,
			q:      url.Values{"path": {"/no/such/dir/f"}, "workingDir": {"/"}},
			status: 400, errHas: "parent directory /no/such/dir does not exist"},
		{name: "existing parent without mkdirParents", method: http.MethodPut,
			q:      url.Values{"path": {"/top.txt"}, "workingDir": {"/"}},
			status: 200, file: "/top.txt", mode: 0o644},
		{name: "dot-dot stays inside the sprite", method: http.MethodPut,
			q:      url.Values{"path": {"../../../escape.txt"}, "workingDir": {"/tmp"}, "mkdirParents": {"true"}},
			status: 200, file: "/escape.txt", mode: 0o644},
		{name: "bad mode", method: http.MethodPut,
			q:      url.Values{"path": {"/m"}, "workingDir": {"/"}, "mode": {"rwx"}},
			status: 400, errHas: "mode"},
		{name: "no path", method: http.MethodPut,
			q:      url.Values{"workingDir": {"/"}},
			status: 400, errHas: "path is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newExecServer(t)
			root := spriteRoot(t, s)
			code, ctype, body := call(t, s, tt.method, "/v1/sprites/box/fs/write?"+tt.q.Encode(), strings.NewReader("content"))
			if code != tt.status {
				t.Fatalf("HTTP %d %s, want %d", code, body, tt.status)
			}
			if tt.errHas != "" {
				var e struct {
					Error string `json:"error"`
				}
				if err := json.Unmarshal(body, &e); err != nil || ctype != "application/json" || !strings.Contains(e.Error, tt.errHas) {
					t.Errorf("error body %q (%s), want JSON whose error has %q", body, ctype, tt.errHas)
				}
				return
			}
			fi, err := os.Stat(filepath.Join(root, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tt.mode {
				t.Errorf("mode %o, want %o", fi.Mode().Perm(), tt.mode)
			}
			if got, code := readFile(t, s, tt.file); code != 200 || got != "content" {
				t.Errorf("read back: HTTP %d %q", code, got)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(root), "escape.txt")); err == nil {
				t.Error("a write left the sprite's directory")
			}
		})
	}
}

// TestFSSymlinkStaysInside: a link that a command inside the sprite could
// make to a directory outside it gives no access to that directory.
func TestFSSymlinkStaysInside(t *testing.T) {
	s := newExecServer(t)
	root := spriteRoot(t, s)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("host file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if body, code := readFile(t, s, "/link/secret"); code == 200 || strings.Contains(body, "host file") {
		t.Errorf("read through the link: HTTP %d %q", code, body)
	}
	q := url.Values{"path": {"/link/planted"}, "workingDir": {"/"}, "mkdirParents": {"true"}}
	if code, _, _ := call(t, s, http.MethodPut, "/v1/sprites/box/fs/write?"+q.Encode(), strings.NewReader("x")); code == 200 {
		t.Error("a write through the link succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Error("a write through the link reached the host")
	}
}

func TestFSRead(t *testing.T) {
	s := newExecServer(t)
	q := url.Values{"path": {"/w/f.txt"}, "workingDir": {"/"}, "mkdirParents": {"true"}}
	if code, _, body := call(t, s, http.MethodPut, "/v1/sprites/box/fs/write?"+q.Encode(), strings.NewReader("hello")); code != 200 {
		t.Fatalf("write: HTTP %d %s", code, body)
	}
	for _, tt := range []struct {
		name   string
		q      url.Values
		status int
		body   string // the content, or what the JSON error contains
	}{
		{"absolute", url.Values{"path": {"/w/f.txt"}, "workingDir": {"/"}}, 200, "hello"},
		{"relative to workingDir", url.Values{"path": {"f.txt"}, "workingDir": {"/w"}}, 200, "hello"},
		{"workingDir ignored for an absolute path", url.Values{"path": {"/w/f.txt"}, "workingDir": {"/elsewhere"}}, 200, "hello"},
		{"without workingDir", url.Values{"path": {"w/f.txt"}}, 200, "hello"},
		{"missing", url.Values{"path": {"/w/nope"}, "workingDir": {"/"}}, 404, "/w/nope: no such file"},
		{"a directory", url.Values{"path": {"/w"}, "workingDir": {"/"}}, 400, "is a directory"},
		{"above the root", url.Values{"path": {"../../../../etc/hostname"}, "workingDir": {"/"}}, 404, "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := call(t, s, http.MethodGet, "/v1/sprites/box/fs/read?"+tt.q.Encode(), nil)
			if code != tt.status || !strings.Contains(string(body), tt.body) {
				t.Errorf("HTTP %d %q, want %d with %q", code, body, tt.status, tt.body)
			}
		})
	}
}

// sdkList is fs/list's answer as the official SDK declares it.
type sdkList struct {
	Path    string `json:"path"`
	Entries []struct {
		Name    string    `json:"name"`
		Path    string    `json:"path"`
		Type    string    `json:"type"`
		Size    int64     `json:"size"`
		Mode    string    `json:"mode"`
		ModTime time.Time `json:"modTime"`
		IsDir   bool      `json:"isDir"`
	} `json:"entries"`
	Count int `json:"count"`
}

func TestFSList(t *testing.T) {
	s := newExecServer(t)
	for p, mode := range map[string]string{"/d/a.sh": "0755", "/d/sub/b": "0644"} {
		q := url.Values{"path": {p}, "workingDir": {"/"}, "mode": {mode}, "mkdirParents": {"true"}}
		if code, _, body := call(t, s, http.MethodPut, "/v1/sprites/box/fs/write?"+q.Encode(), strings.NewReader("12345")); code != 200 {
			t.Fatalf("write %s: HTTP %d %s", p, code, body)
		}
	}
	type entry struct {
		name, path, typ, mode string
		size                  int64
		dir                   bool
	}
	for _, tt := range []struct {
		name   string
		q      url.Values
		status int
		want   []entry
	}{
		{"a directory", url.Values{"path": {"/d"}, "workingDir": {"/"}}, 200, []entry{
			{"a.sh", "/d/a.sh", "file", "0755", 5, false},
			{"sub", "/d/sub", "directory", "0755", -1, true},
		}},
		{"relative to workingDir", url.Values{"path": {"sub"}, "workingDir": {"/d"}}, 200, []entry{
			{"b", "/d/sub/b", "file", "0644", 5, false},
		}},
		{"a file lists as itself", url.Values{"path": {"/d/a.sh"}, "workingDir": {"/"}}, 200, []entry{
			{"a.sh", "/d/a.sh", "file", "0755", 5, false},
		}},
		{"missing", url.Values{"path": {"/nope"}, "workingDir": {"/"}}, 404, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := call(t, s, http.MethodGet, "/v1/sprites/box/fs/list?"+tt.q.Encode(), nil)
			if code != tt.status {
				t.Fatalf("HTTP %d %s, want %d", code, body, tt.status)
			}
			if code != 200 {
				return
			}
			var l sdkList
			if err := json.Unmarshal(body, &l); err != nil {
				t.Fatal(err)
			}
			if l.Count != len(tt.want) || len(l.Entries) != len(tt.want) {
				t.Fatalf("list %s, want %d entries", body, len(tt.want))
			}
			for i, w := range tt.want {
				e := l.Entries[i]
				if _, err := strconv.ParseUint(e.Mode, 8, 32); err != nil { // how the SDK reads it
					t.Errorf("mode %q is not octal", e.Mode)
				}
				if e.Name != w.name || e.Path != w.path || e.Type != w.typ || e.Mode != w.mode || e.IsDir != w.dir || (w.size >= 0 && e.Size != w.size) || e.ModTime.IsZero() {
					t.Errorf("entry %d = %+v, want %+v", i, e, w)
				}
			}
		})
	}
}
