package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeBackend struct{ reloads int }

func (f *fakeBackend) Status() Status { return Status{Version: "test", PID: 42} }
func (f *fakeBackend) Reload() ReloadResult {
	f.reloads++
	if f.reloads == 1 {
		return ReloadResult{Errors: []string{"c.yaml:1:1: bad"}}
	}
	return ReloadResult{OK: true}
}

func TestSocketIsPrivateAndAnswers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "spritefwd.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %#o, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode %#o, want 0700", di.Mode().Perm())
	}
	// A second daemon must not steal a live socket.
	if _, err := Listen(path); !errors.Is(err, ErrRunning) {
		t.Errorf("second Listen: %v, want ErrRunning", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &fakeBackend{}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, b) }()
	c := NewClient(path)
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil || st.PID != 42 {
		t.Fatalf("status %+v, %v", st, err)
	}
	if r, err := c.Reload(ctx); err != nil || r.OK || r.Errors[0] != "c.yaml:1:1: bad" {
		t.Errorf("rejected reload: %+v, %v", r, err)
	}
	if r, err := c.Reload(ctx); err != nil || !r.OK {
		t.Errorf("reload: %+v, %v", r, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	os.WriteFile(path, nil, 0o600) // left by a crash: nothing answers
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	defer c.Close()
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no daemon: %v, want ErrNotRunning", err)
	}
}
