package mux

import (
	"encoding/binary"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// coalescer joins each yamux data header with the body that follows it, so
// that a frame crosses a message-based link as one message, not two. yamux's
// send loop is the only writer, and writes a data frame's header and then
// its body, so holding the header between the two calls is safe.
// It also notes when the link last delivered anything, so that a session
// that has been quiet can be probed before it is trusted with a stream.
//
// Its reads can wait at a gate: yamux may send before the agent's proof is
// read off the same link (see Dial), but reads nothing until then.
type coalescer struct {
	io.ReadWriteCloser
	hdr      [12]byte
	held     bool
	buf      []byte
	lastRead atomic.Int64

	gate      chan struct{} // nil, or closed when reads may start
	closed    chan struct{} // with gate: closed by Close
	closeOnce sync.Once
}

// gated returns a coalescer whose reads wait for open.
func gated(link io.ReadWriteCloser) *coalescer {
	return &coalescer{ReadWriteCloser: link, gate: make(chan struct{}), closed: make(chan struct{})}
}

// open lets reads start.
func (c *coalescer) open() { close(c.gate) }

func (c *coalescer) Close() error {
	if c.closed != nil {
		c.closeOnce.Do(func() { close(c.closed) })
	}
	return c.ReadWriteCloser.Close()
}

func (c *coalescer) Read(p []byte) (int, error) {
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-c.closed:
			return 0, io.ErrClosedPipe
		}
	}
	n, err := c.ReadWriteCloser.Read(p)
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *coalescer) Write(p []byte) (int, error) {
	// A yamux header: version, type (0 = data), flags, stream id, length.
	if !c.held && len(p) == 12 && p[1] == 0 && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	if !c.held {
		return c.ReadWriteCloser.Write(p)
	}
	c.held = false
	k := min(len(p), maxChunk-len(c.hdr))
	if c.buf == nil {
		c.buf = make([]byte, maxChunk)
	}
	b := append(append(c.buf[:0], c.hdr[:]...), p[:k]...)
	if _, err := c.ReadWriteCloser.Write(b); err != nil {
		return 0, err
	}
	if k == len(p) {
		return k, nil
	}
	n, err := c.ReadWriteCloser.Write(p[k:])
	return k + n, err
}
