package spritestest

import (
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestAuthToken: only the exact header passes; a prefix, an extension or
// another scheme of the right token is as wrong as a wrong one.
func TestAuthToken(t *testing.T) {
	s := newExecServer(t)
	for _, tt := range []struct {
		header string
		want   int
	}{
		{"Bearer " + testToken, http.StatusOK},
		{"", http.StatusUnauthorized},
		{"Bearer ", http.StatusUnauthorized},
		{"Bearer dev", http.StatusUnauthorized},
		{"Bearer " + testToken[:len(testToken)-1], http.StatusUnauthorized},
		{"Bearer " + testToken + "x", http.StatusUnauthorized},
		{"bearer " + testToken, http.StatusUnauthorized},
		{testToken, http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/v1/sprites", nil)
		if tt.header != "" {
			req.Header.Set("Authorization", tt.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("Authorization %q: HTTP %d, want %d", tt.header, resp.StatusCode, tt.want)
		}
	}
}

func TestCheckToken(t *testing.T) {
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		tok string
		ok  bool
	}{
		{tok, true},
		{"0123456789abcdef", true},
		{"dev", false},
		{"", false},
		{"0123456789abcde", false},
		{"0123456789 abcdef", false},
		{"0123456789abcdef\x1b[2J", false},
	} {
		if err := CheckToken(tt.tok); (err == nil) != tt.ok {
			t.Errorf("CheckToken(%q) = %v, want ok %v", tt.tok, err, tt.ok)
		}
	}
	if len(tok) != 64 {
		t.Errorf("NewToken: %d characters, want 64 (32 bytes in hex)", len(tok))
	}
}

func TestCreateTokenFile(t *testing.T) {
	base := t.TempDir()
	tok, path, remove, err := CreateTokenFile(base)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(filepath.Dir(path)) != base {
		t.Errorf("token file %s is not in a directory of its own under %s", path, base)
	}
	got, created, err := LoadOrCreateTokenFile(path)
	if err != nil || created || got != tok {
		t.Errorf("read back: %q created=%v %v, want the token", got, created, err)
	}
	if runtime.GOOS != "windows" {
		for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v %v, want %#o", p, fi.Mode().Perm(), err, want)
			}
		}
	}
	remove()
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("remove left %s: %v", filepath.Dir(path), err)
	}
}

func TestLoadOrCreateTokenFile(t *testing.T) {
	good := strings.Repeat("a1", 16)
	for _, tt := range []struct {
		name    string
		content string // "" for no file
		mode    os.FileMode
		created bool
		want    string // token, or a piece of the error
		unix    bool   // the check needs unix modes
	}{
		{name: "missing: made", created: true},
		{name: "existing", content: good + "\n", mode: 0o600, want: good},
		{name: "readable by others", content: good, mode: 0o644, want: "chmod 600", unix: true},
		{name: "writable by group", content: good, mode: 0o620, want: "chmod 600", unix: true},
		{name: "fixed word", content: "dev\n", mode: 0o600, want: "at least 16"},
		{name: "too large", content: strings.Repeat("x", 5000), mode: 0o600, want: "larger than 4096"},
		{name: "two lines", content: good + "\n" + good, mode: 0o600, want: "one line"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.unix && runtime.GOOS == "windows" {
				t.Skip("no unix modes")
			}
			path := filepath.Join(t.TempDir(), "sub", "sim-token")
			if tt.content != "" {
				os.MkdirAll(filepath.Dir(path), 0o700)
				if err := os.WriteFile(path, []byte(tt.content), tt.mode); err != nil {
					t.Fatal(err)
				}
				os.Chmod(path, tt.mode) // whatever the umask
			}
			tok, created, err := LoadOrCreateTokenFile(path)
			if created != tt.created {
				t.Errorf("created = %v, want %v", created, tt.created)
			}
			switch {
			case tt.created:
				if err != nil || CheckToken(tok) != nil {
					t.Fatalf("made %q, %v", tok, err)
				}
				again, created, err := LoadOrCreateTokenFile(path)
				if err != nil || created || again != tok {
					t.Errorf("second run: %q created=%v %v, want the same token", again, created, err)
				}
				if fi, err := os.Stat(path); runtime.GOOS != "windows" && (err != nil || fi.Mode().Perm() != 0o600) {
					t.Errorf("mode %v %v, want 0600", fi.Mode().Perm(), err)
				}
			case tt.want == good:
				if err != nil || tok != good {
					t.Errorf("got %q, %v", tok, err)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
					t.Errorf("got %q, %v; want an error naming %s and saying %q", tok, err, path, tt.want)
				}
			}
		})
	}
}

// TestTokenFileOwnedByAnother: a file someone else made holds a token they
// chose, whatever its mode. Making one takes root.
func TestTokenFileOwnedByAnother(t *testing.T) {
	if runtime.GOOS == "windows" || os.Getuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	path := filepath.Join(t.TempDir(), "sim-token")
	if err := os.WriteFile(path, []byte(strings.Repeat("a1", 16)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Skip(err)
	}
	if _, _, err := LoadOrCreateTokenFile(path); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("got %v, want a refusal naming the owner", err)
	}
}
