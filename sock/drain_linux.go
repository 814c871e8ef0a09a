package sock

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// drainSendQueue waits, up to max, until the kernel has no unacknowledged
// bytes queued for c. A reset with SO_LINGER 0 discards that queue, so this
// is what lets the client receive every byte before the RST.
func drainSendQueue(c net.Conn, max time.Duration) {
	sc, ok := c.(syscall.Conn)
	if !ok || max <= 0 {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	deadline := time.Now().Add(max)
	for {
		queued := 0
		if raw.Control(func(fd uintptr) { queued, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }) != nil || err != nil {
			return
		}
		if queued == 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}
