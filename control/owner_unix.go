//go:build unix

package control

import (
	"os"
	"syscall"
)

// checkPerm: Unix permission bits say who can change the directory.
const checkPerm = true

func fileOwner(fi os.FileInfo) (uid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
