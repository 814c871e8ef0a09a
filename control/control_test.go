package control

import (
	"cmp"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeBackend struct{ reloads int }

func (f *fakeBackend) Status() Status { return Status{Version: "test", PID: 42} }
func (f *fakeBackend) Carry(sprite string, port int, c net.Conn, done func(error)) error {
	return errors.New("no sprites here")
}
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
	gcs := func() uint32 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.NumGC
	}
	before := gcs()
	if err := c.CollectGarbage(ctx); err != nil || gcs() == before {
		t.Errorf("CollectGarbage: %v; %d GCs before, %d after", err, before, gcs())
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

// The socket's directory must be this user's alone, or another user could
// keep the daemon from starting or answer status in its place. Both the
// daemon (Listen) and the client (status, reload) refuse one that is not.
func TestSocketDirMustBePrivate(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, dir string) // makes dir before the daemon does
		want string                         // in the error; "" for none
		keep os.FileMode                    // with no error: the mode it has after; default 0700
	}{
		{name: "made by the daemon", make: func(*testing.T, string) {}},
		{name: "already there and private", make: func(t *testing.T, dir string) { mkdir(t, dir, 0o700) }},
		{name: "another user's", want: "belongs to uid 65534", make: func(t *testing.T, dir string) {
			mkdir(t, dir, 0o700)
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Skipf("cannot give a directory to another user here (not root?): %v", err)
			}
		}},
		{name: "a symlink to a private directory", want: "is a symbolic link", make: func(t *testing.T, dir string) {
			real := dir + ".real"
			mkdir(t, real, 0o700)
			if err := os.Symlink(real, dir); err != nil {
				t.Skipf("no symlinks here: %v", err)
			}
		}},
		{name: "group-writable", want: "chmod 700", make: func(t *testing.T, dir string) { mkdir(t, dir, 0o770) }},
		{name: "world-writable", want: "mode 0777", make: func(t *testing.T, dir string) { mkdir(t, dir, 0o777) }},
		// Others may look (a home directory often is 0755), not change.
		{name: "readable by others", keep: 0o755, make: func(t *testing.T, dir string) { mkdir(t, dir, 0o755) }},
		{name: "a file", want: "not a directory", make: func(t *testing.T, dir string) { os.WriteFile(dir, nil, 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "spritefwd-1000")
			tc.make(t, dir)
			path := filepath.Join(dir, "spritefwd.sock")
			ln, err := Listen(path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				defer ln.Close()
				want := cmp.Or(tc.keep, 0o700)
				if di, _ := os.Lstat(dir); di.Mode().Perm() != want {
					t.Errorf("directory mode %#o, want %#o", di.Mode().Perm(), want)
				}
				return
			}
			if err == nil {
				ln.Close()
				t.Fatalf("Listen accepted the directory; want an error with %q", tc.want)
			}
			if !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--socket") {
				t.Errorf("Listen: %v\nwant ErrUnsafeDir, %q and the fix", err, tc.want)
			}
		})
	}
}

// A daemon of another user's, answering in a directory that is not ours,
// is not believed.
func TestClientRefusesSocketInUnsafeDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spritefwd-1000")
	path := filepath.Join(dir, "spritefwd.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, &fakeBackend{}) }()
	defer func() { cancel(); <-done }()
	c := NewClient(path)
	defer c.Close()
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("private directory: %v", err)
	}
	os.Chmod(dir, 0o777)
	if _, err := c.Status(ctx); !errors.Is(err, ErrUnsafeDir) {
		t.Errorf("world-writable directory: %v, want ErrUnsafeDir", err)
	}
	if _, err := c.Reload(ctx); !errors.Is(err, ErrUnsafeDir) {
		t.Errorf("reload, world-writable directory: %v, want ErrUnsafeDir", err)
	}
	os.Chmod(dir, 0o700)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Skipf("cannot give a directory to another user here (not root?): %v", err)
	}
	if _, err := c.Status(ctx); !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("another user's directory: %v, want ErrUnsafeDir naming the owner", err)
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, mode) // past the umask
}
