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
func testRunner(t *testing.T, mode os.FileMode, log *syncBuffer) (*runner, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spritefwd.yaml")
	os.WriteFile(path, []byte("keepalive: 5s\n"), mode)
	os.Chmod(path, mode) // past the umask
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return newRunner(runnerOptions{log: zerolog.New(log), configPath: path, cfg: cfg}), path
}

// A config others can write to is logged at start and at each reload, as
// the README says, and not only shown by status.
func TestConfigWritableByOthersIsLogged(t *testing.T) {
	t.Setenv(config.TokenEnv, "tok")
	var log syncBuffer
	r, _ := testRunner(t, 0o666, &log)
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
