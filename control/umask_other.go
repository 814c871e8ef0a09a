//go:build !unix

package control

// Windows has no umask; the socket's directory is private instead.
func syscallUmask(mask int) int { return 0 }
