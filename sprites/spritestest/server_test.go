package spritestest

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spritefwd/spritefwd/sprites"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testToken = "exec-test-token"

// newExecServer is an emulator with one sprite, box, that never sleeps
// on its own.
func newExecServer(t *testing.T) *Server {
	s := NewServer(Options{Token: testToken, IdleSleep: -1, WakeDelay: 50 * time.Millisecond})
	t.Cleanup(s.Close)
	s.CreateSprite("box")
	return s
}

// call sends one authorized request to the emulator and returns the
// response's status, Content-Type and body.
func call(t *testing.T, s *Server, method, pathAndQuery string, body io.Reader) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+pathAndQuery, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// readFile reads a file of box through fs/read.
func readFile(t *testing.T, s *Server, path string) (string, int) {
	t.Helper()
	code, _, body := call(t, s, http.MethodGet, "/v1/sprites/box/fs/read?"+url.Values{"path": {path}, "workingDir": {"/"}}.Encode(), nil)
	return string(body), code
}

// TestAuthFailureIsPlainText: the in-sprite server's 401 is plain text,
// and the client's ErrorBody reads it as it is.
func TestAuthFailureIsPlainText(t *testing.T) {
	s := newExecServer(t)
	for _, path := range []string{"/v1/sprites", "/v1/sprites/box/proxy", "/v1/sprites/box/fs/read?path=/x"} {
		req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
		req.Header.Set("Authorization", "Bearer wrong")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: HTTP %d %q, want 401 text/plain", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if got := sprites.ErrorBody(b); got != "Missing or invalid authentication" {
			t.Errorf("%s: ErrorBody(%q) = %q", path, b, got)
		}
	}
}

func TestParseMap(t *testing.T) {
	for _, tt := range []struct {
		in     string
		name   string
		port   int
		target string
		ok     bool
	}{
		{"db:5432=127.0.0.1:15432", "db", 5432, "127.0.0.1:15432", true},
		{"db:5432=unix:/tmp/pg/.s.PGSQL.5432", "db", 5432, "unix:/tmp/pg/.s.PGSQL.5432", true},
		{"web:80=[::1]:8080", "web", 80, "[::1]:8080", true},
		{"db:5432", "", 0, "", false},
		{"db:0=127.0.0.1:1", "", 0, "", false},
		{"db:x=127.0.0.1:1", "", 0, "", false},
		{":5432=127.0.0.1:1", "", 0, "", false},
		{"db:5432=nohostport", "", 0, "", false},
	} {
		name, port, target, err := ParseMap(tt.in)
		if (err == nil) != tt.ok || name != tt.name || port != tt.port || target != tt.target {
			t.Errorf("ParseMap(%q) = %q %d %q %v", tt.in, name, port, target, err)
		}
	}
}

func FuzzParseMap(f *testing.F) {
	f.Add("db:5432=127.0.0.1:15432")
	f.Add("x:1=unix:/p")
	f.Fuzz(func(t *testing.T, s string) {
		_, port, _, err := ParseMap(s)
		if err == nil && (port < 1 || port > 65535) {
			t.Fatalf("accepted port %d", port)
		}
	})
}
