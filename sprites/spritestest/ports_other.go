//go:build !linux

package spritestest

import (
	"syscall"

	"github.com/spritefwd/spritefwd/procnet"
)

// listeningSockets needs /proc; elsewhere exec children's ports are not
// reachable through the proxy, nor in the sprite's tables (use Map).
func listeningSockets(pid int) []procnet.Listener { return nil }

func listeningSocketsOf(pids []int) []procnet.Listener { return nil }

// dieWithParent needs Linux's parent-death signal; elsewhere the emulator's
// Close kills its commands.
func dieWithParent(*syscall.SysProcAttr) {}
