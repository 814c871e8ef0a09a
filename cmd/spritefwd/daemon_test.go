package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
)

// syncBuffer is a log destination the daemon's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testRunner writes a config with no forwards and returns a runner for it
// that has not started.
func testRunner(t *testing.T, mode os.FileMode, root bool, log *syncBuffer) (*runner, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spritefwd.yaml")
	os.WriteFile(path, []byte("keepalive: 5s\n"), mode)
	os.Chmod(path, mode) // past the umask
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return newRunner(runnerOptions{log: zerolog.New(log), configPath: path, cfg: cfg, root: root}), path
}

// A config others can write to is logged at start and at each reload, as
// the README says, and not only shown by status.
func TestConfigWritableByOthersIsLogged(t *testing.T) {
	t.Setenv(config.TokenEnv, "tok")
	var log syncBuffer
	r, _ := testRunner(t, 0o666, false, &log)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	const warning = "is writable by others (mode 0666)"
	if n := strings.Count(log.String(), warning); n != 1 {
		t.Errorf("start logged the warning %d times, want once:\n%s", n, log.String())
	}
	if res := r.Reload(); !res.OK {
		t.Fatalf("reload: %v", res.Errors)
	}
	if n := strings.Count(log.String(), warning); n != 2 {
		t.Errorf("after a reload the warning is logged %d times, want twice:\n%s", n, log.String())
	}
}

// As root (a system service) the daemon refuses config and token files
// that anyone else could change, at start and at reload.
func TestRootRefusesFilesOthersCanChange(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to have files owned by root")
	}
	t.Setenv(config.TokenEnv, "tok")
	var log syncBuffer
	r, path := testRunner(t, 0o664, true, &log)
	if err := r.Start(); err == nil || !strings.Contains(err.Error(), "chmod go-w "+path) {
		t.Fatalf("start with a group-writable config: %v, want a refusal that says the fix", err)
	}
	r.Stop()

	r, path = testRunner(t, 0o644, true, &log)
	if err := r.Start(); err != nil {
		t.Fatalf("start with root's config: %v", err)
	}
	defer r.Stop()
	os.Chmod(path, 0o666)
	if res := r.Reload(); res.OK || !strings.Contains(strings.Join(res.Errors, "\n"), "runs as root") {
		t.Errorf("reload of a world-writable config: %+v, want it rejected", res)
	}
	os.Chmod(path, 0o644)
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("tok\n"), 0o600)
	os.WriteFile(path, []byte("token_file: "+tok+"\n"), 0o644)
	t.Setenv(config.TokenEnv, "")
	if res := r.Reload(); !res.OK {
		t.Fatalf("reload with root's token file: %v", res.Errors)
	}
	if err := os.Chown(tok, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if res := r.Reload(); res.OK || !strings.Contains(strings.Join(res.Errors, "\n"), "token_file "+tok+" belongs to uid 65534") {
		t.Errorf("reload with another user's token file: %+v, want it rejected", res)
	}
}
