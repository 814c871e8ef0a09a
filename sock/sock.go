// Package sock is what both relays, direct and mux, do to the local end of
// a connection: the half-close interface, an abortive close (RST), and an
// abort that first lets the kernel send what was already written, so a
// peer reads every delivered byte and then a reset, never a clean EOF.
package sock

import (
	"net"
	"time"
)

// Conn is a connection that can half-close: a TCP connection, a Unix one,
// or a wrapper. CloseWrite sends FIN and keeps reading.
type Conn interface {
	net.Conn
	CloseWrite() error
}

// Abort ends a connection after a failure: it waits, up to drain, for the
// kernel to send what was already written, then resets, so the peer reads
// every delivered byte and then ECONNRESET, never a clean EOF.
func Abort(c net.Conn, drain time.Duration) {
	drainSendQueue(c, drain)
	Reset(c)
}

// Reset aborts a connection with RST where the type allows (SetLinger(0)),
// and otherwise just closes it.
func Reset(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}

// WithoutHalfClose adapts a net.Conn that cannot half-close: its
// CloseWrite does nothing, and the connection closes only as a whole.
func WithoutHalfClose(c net.Conn) Conn {
	if hc, ok := c.(Conn); ok {
		return hc
	}
	return noHalfClose{c}
}

type noHalfClose struct{ net.Conn }

func (noHalfClose) CloseWrite() error { return nil }

// SetLinger passes a reset through to the connection underneath.
func (n noHalfClose) SetLinger(sec int) error {
	if l, ok := n.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}
