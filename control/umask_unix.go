//go:build unix

package control

import "syscall"

func syscallUmask(mask int) int { return syscall.Umask(mask) }
