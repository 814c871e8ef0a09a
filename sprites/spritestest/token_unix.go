//go:build unix

package spritestest

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkPrivate refuses a token file that others can read or write (they
// would know or choose the token, and so run commands as this user through
// exec) or that another user owns (they chose its content, whatever its
// mode says now).
func checkPrivate(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("has mode %#o: others could read or change the token and run commands as you through the emulator's exec; run chmod 600 %s", perm, path)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Getuid(); int(st.Uid) != uid {
		return fmt.Errorf("is owned by uid %d, not by you (uid %d); remove it, and a new one is made", st.Uid, uid)
	}
	return nil
}
