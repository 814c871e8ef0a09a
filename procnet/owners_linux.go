package procnet

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Owners maps socket inodes to the process holding them, by its command
// name, for the processes this one may inspect (its own user's, unless
// root). It reads /proc/<pid>/fd; inodes it cannot place are left out.
// maxProcs bounds the scan on a busy machine.
func Owners(proc string, inodes map[uint64]bool) map[uint64]Owner {
	out := map[uint64]Owner{}
	if len(inodes) == 0 {
		return out
	}
	ents, err := os.ReadDir(proc)
	if err != nil {
		return out
	}
	scanned := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		if scanned++; scanned > maxProcs || len(out) == len(inodes) {
			break
		}
		dir := filepath.Join(proc, e.Name())
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(l, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]"), 10, 64)
			if err != nil || !inodes[ino] {
				continue
			}
			if _, ok := out[ino]; ok {
				continue
			}
			name, _ := os.ReadFile(filepath.Join(dir, "comm"))
			out[ino] = Owner{PID: pid, Name: strings.TrimSpace(string(name))}
		}
	}
	return out
}
