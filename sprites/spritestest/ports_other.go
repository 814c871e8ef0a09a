//go:build !linux

package spritestest

import "syscall"

// listeningPorts needs /proc; elsewhere exec children's ports are not
// reachable through the proxy (use Map).
func listeningPorts(pid int) map[int]bool { return nil }

// dieWithParent needs Linux's parent-death signal; elsewhere the emulator's
// Close kills its commands.
func dieWithParent(*syscall.SysProcAttr) {}
