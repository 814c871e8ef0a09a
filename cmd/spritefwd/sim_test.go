package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer that sim's goroutine and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runningSim is `spritefwd sim` running in this process.
type runningSim struct {
	url, tokenLine string
	caLine         string // with --tls: the third ready line
	stdout, stderr *lockedBuffer
	stop           func() error
}

// startSim runs sim with args and env until the test ends, and waits for
// its two ready lines. It fails the test if sim exits before them.
func startSim(t *testing.T, env map[string]string, args ...string) *runningSim {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	r := &runningSim{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}}
	done := make(chan error, 1)
	go func() {
		err := runSim(ctx, append([]string{"--listen", "127.0.0.1:0", "--log-level", "error"}, args...),
			func(k string) string { return env[k] }, io.MultiWriter(pw, r.stdout), r.stderr)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	stopped := false
	var exitErr error
	r.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			go io.Copy(io.Discard, pr)
			exitErr = <-done
		}
		return exitErr
	}
	t.Cleanup(func() { r.stop() })
	br := bufio.NewReader(pr)
	serving, err1 := br.ReadString('\n')
	tokenLine, err2 := br.ReadString('\n')
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("sim %v: %v (stop: %v)\nstdout: %s\nstderr: %s", args, err, r.stop(), r.stdout, r.stderr)
	}
	if slices.Contains(args, "--tls") {
		caLine, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("sim %v: no CA line: %v (stop: %v)\nstdout: %s\nstderr: %s", args, err, r.stop(), r.stdout, r.stderr)
		}
		r.caLine = strings.TrimSpace(strings.TrimPrefix(caLine, "spritefwd sim: "))
	}
	r.url = strings.TrimSpace(strings.TrimPrefix(serving, "spritefwd sim: serving "))
	r.tokenLine = strings.TrimSpace(strings.TrimPrefix(tokenLine, "spritefwd sim: "))
	return r
}

// tokenPath is the file named in the token line.
func (r *runningSim) tokenPath(t *testing.T) string {
	t.Helper()
	p, ok := strings.CutPrefix(r.tokenLine, "token in ")
	if !ok {
		t.Fatalf("token line %q names no file", r.tokenLine)
	}
	return strings.TrimSuffix(p, " (new)")
}

// status is the HTTP status of an authorized list call.
func (r *runningSim) status(t *testing.T, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.url+"/v1/sprites", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func readToken(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestSimMakesItsToken: sim with no token is not reachable with a fixed
// one ("dev", once the README's), but with the random token in the file
// it prints; the file is 0600 in a 0700 directory of its own, removed when
// sim ends; the token itself appears on neither stdout nor stderr.
func TestSimMakesItsToken(t *testing.T) {
	runtimeDir := t.TempDir()
	r := startSim(t, map[string]string{"XDG_RUNTIME_DIR": runtimeDir, "SPRITES_TOKEN": "dev"})
	path := r.tokenPath(t)
	if !strings.HasPrefix(path, runtimeDir+string(filepath.Separator)) {
		t.Errorf("token file %s is not under $XDG_RUNTIME_DIR %s", path, runtimeDir)
	}
	if runtime.GOOS != "windows" {
		for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v %v, want %#o", p, fi.Mode().Perm(), err, want)
			}
		}
	}
	token := readToken(t, path)
	if len(token) < 32 {
		t.Errorf("token of %d characters", len(token))
	}
	for _, tt := range []struct {
		token string
		want  int
	}{
		{"dev", http.StatusUnauthorized},
		{"", http.StatusUnauthorized},
		{token, http.StatusOK},
	} {
		if got := r.status(t, tt.token); got != tt.want {
			t.Errorf("token %q: HTTP %d, want %d", tt.token, got, tt.want)
		}
	}
	if !strings.Contains(r.stderr.String(), "$SPRITES_TOKEN is not the emulator's token") {
		t.Errorf("no word that $SPRITES_TOKEN is unused; stderr: %s", r.stderr)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.stdout.String()+r.stderr.String(), token) {
		t.Errorf("the token was printed:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("token directory left behind: %v", err)
	}
}

// TestSimTokenSources: a token file (made if missing, kept and reused),
// or $SPRITEFWD_SIM_TOKEN; $SPRITES_TOKEN alone is not used.
func TestSimTokenSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sim-token")
	long := strings.Repeat("s1", 20)
	r := startSim(t, nil, "--token-file", file)
	if got := r.tokenPath(t); got != file || !strings.HasSuffix(r.tokenLine, " (new)") {
		t.Errorf("token line %q, want a new %s", r.tokenLine, file)
	}
	made := readToken(t, file)
	if r.status(t, made) != http.StatusOK {
		t.Error("the made token is refused")
	}
	r.stop()
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("a --token-file sim made is gone after it ends: %v", err)
	}
	r = startSim(t, nil, "--token-file", file)
	if r.status(t, made) != http.StatusOK || strings.HasSuffix(r.tokenLine, " (new)") {
		t.Errorf("second run with the same file: %q, token refused or remade", r.tokenLine)
	}
	r.stop()

	r = startSim(t, map[string]string{"SPRITEFWD_SIM_TOKEN": long, "SPRITES_TOKEN": "dev"})
	if r.tokenLine != "token from $SPRITEFWD_SIM_TOKEN" || r.status(t, long) != http.StatusOK || r.status(t, "dev") != http.StatusUnauthorized {
		t.Errorf("$SPRITEFWD_SIM_TOKEN: line %q", r.tokenLine)
	}
}

// TestSimRefusesTokens: never on the command line, never guessable, never
// in a file others can read.
func TestSimRefusesTokens(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte(strings.Repeat("o1", 20)), 0o644)
	os.Chmod(open, 0o644)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("dev\n"), 0o600)
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want string
		unix bool
	}{
		{name: "--token", args: []string{"--token", "dev"}, want: "--token-file"},
		{name: "--token long", args: []string{"--token=" + strings.Repeat("x", 40)}, want: "ps shows"},
		{name: "short env", env: map[string]string{"SPRITEFWD_SIM_TOKEN": "dev"}, want: "at least 16"},
		{name: "short file", args: []string{"--token-file", short}, want: "at least 16"},
		{name: "file others read", args: []string{"--token-file", open}, want: "chmod 600", unix: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.unix && runtime.GOOS == "windows" {
				t.Skip("no unix modes")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := runSim(ctx, append([]string{"--listen", "127.0.0.1:0"}, tt.args...), func(k string) string { return tt.env[k] }, &stdout, &stderr)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(ee.msg, tt.want) {
				t.Errorf("got %v, want exit 2 saying %q", err, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("served anyway: %s", stdout.String())
			}
		})
	}
}
