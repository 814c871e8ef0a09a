//go:build unix

package main

import (
	"syscall"

	"github.com/rs/zerolog"
)

// logFileLimit reports the open-file limit. The Go runtime already raised
// the soft limit to the hard one at start-up; each connection needs one
// descriptor locally, and the link one more.
func logFileLimit(log zerolog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	ev := log.Debug()
	if lim.Cur < 4096 {
		ev = log.Warn()
	}
	ev.Uint64("nofile", uint64(lim.Cur)).Int("max_connections_total", int(lim.Cur/2)).Msg("open-file limit; each forwarded connection uses two")
}
