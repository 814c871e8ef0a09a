package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrUnsafeDir means the control socket's directory is not private to this
// user. Whoever can write to that directory can put their own socket in
// place of the daemon's and answer status and reload for it, or keep the
// daemon from starting, so neither side uses it.
var ErrUnsafeDir = errors.New("control socket directory is not private")

// makeDir creates the socket's directory with mode 0700, and then checks
// it, as it may have been there already: made by someone else first.
func makeDir(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
	}
	return checkDir(dir)
}

// checkDir accepts dir only if it is a real directory (not a symbolic
// link, which could be pointed elsewhere later), owned by this user, that
// neither group nor others can write to. Lstat, because Stat would vouch
// for the link's target rather than for the name the socket is reached by.
//
// Read and search bits are allowed: they let no one replace the socket or
// connect to it (it is 0600), and refusing them would refuse a --socket in
// a home directory (often 0755) for no gain. The directory spritefwd
// makes itself has mode 0700.
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	fix := "or pass --socket with a path in a directory of your own with mode 0700, or set XDG_RUNTIME_DIR"
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, _ := os.Readlink(dir)
		return fmt.Errorf("%w: %s is a symbolic link (to %s); remove it (rm %s), %s", ErrUnsafeDir, dir, target, dir, fix)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory; remove it, %s", ErrUnsafeDir, dir, fix)
	}
	if uid, ok := fileOwner(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("%w: %s belongs to uid %d, not to you (uid %d); remove it (as its owner or root: rm -r %s), %s",
			ErrUnsafeDir, dir, uid, os.Geteuid(), dir, fix)
	}
	if perm := fi.Mode().Perm(); checkPerm && perm&0o022 != 0 {
		return fmt.Errorf("%w: %s has mode %#o: group or others can write to it; run chmod 700 %s, %s", ErrUnsafeDir, dir, perm, dir, fix)
	}
	return nil
}
