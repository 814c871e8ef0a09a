//go:build !linux

package spritestest

// listeningPorts needs /proc; elsewhere exec children's ports are not
// reachable through the proxy (use Map).
func listeningPorts(pid int) map[int]bool { return nil }
