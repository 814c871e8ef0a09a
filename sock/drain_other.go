//go:build !linux

package sock

import (
	"net"
	"time"
)

// drainSendQueue gives the kernel a moment to send queued bytes before a
// reset. Only Linux exposes the queue length (SIOCOUTQ), so elsewhere this
// waits a fixed fraction of max.
func drainSendQueue(c net.Conn, max time.Duration) {
	time.Sleep(min(max, 50*time.Millisecond))
}
