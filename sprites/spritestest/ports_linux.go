package spritestest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spritefwd/spritefwd/procnet"
)

// listeningSockets lists the TCP sockets that a process, or any of its
// descendants, listens on. It reads /proc: the socket inodes among each
// process's open files, matched against the kernel's listening sockets.
// This is how a real sprite notices ports for its port_opened notices.
func listeningSockets(pid int) []procnet.Listener { return listeningSocketsOf([]int{pid}) }

// listeningSocketsOf is listeningSockets for several processes, with one
// read of the kernel's tables.
func listeningSocketsOf(pids []int) []procnet.Listener {
	inodes := map[string]bool{}
	var walk func(pid int, depth int)
	walk = func(pid int, depth int) {
		if depth > 8 {
			return
		}
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
		kids, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, k := range kids {
			b, _ := os.ReadFile(k)
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					walk(c, depth+1)
				}
			}
		}
	}
	for _, pid := range pids {
		walk(pid, 0)
	}
	if len(inodes) == 0 {
		return nil
	}
	var out []procnet.Listener
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		ls, _ := procnet.Parse(b)
		for _, l := range ls {
			if inodes[strconv.FormatUint(l.Inode, 10)] {
				out = append(out, l)
			}
		}
	}
	return out
}

// dieWithParent kills a command when the emulator's process dies, however
// it dies: an emulator killed with SIGKILL must not leave agents running.
func dieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
