package sprites

import (
	"net"
	"sync"
)

// frameWriter sits between coder/websocket and the connection under one
// proxy link, and hands each WebSocket frame to the connection in one write.
//
// coder/websocket writes through a 4 KiB bufio.Writer it does not let us
// size, so a 32 KiB message reached the connection as eight writes: eight
// system calls, eight TLS records, eight wake-ups for the server's reader.
// frameWriter follows the frame headers in the bytes going by and writes
// as soon as what it holds ends at a frame boundary; nothing ever waits for
// a later write. It does nothing until armed, which Dial does after the
// upgrade: the HTTP request before it is not made of frames.
//
// A Link that splits one write into several messages (a sprite that reads
// only 1,024 bytes per message) holds the frameWriter for that write, so
// whole frames gather up to frameHold and go out in one system call and,
// over TLS, one record, instead of one per kilobyte.
//
// coder/websocket serializes its writes, but hold and release come from the
// Link, beside a ping that coder/websocket may be writing: hence mu.
type frameWriter struct {
	net.Conn
	armed bool
	mu    sync.Mutex
	held  bool    // whole frames wait for release or a full buffer
	buf   *[]byte // held bytes; from the pool, nil when none
	// The parser: hdr holds the first hn bytes of a header, and rest is how
	// much payload the current frame still has to come.
	hdr  [14]byte
	hn   int
	rest uint64
}

// frameHold bounds what a frameWriter holds: a 32 KiB message (the default
// max_message) and its header fit. A larger frame goes out in pieces.
const frameHold = DefaultMaxMessage + 14

var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, frameHold); return &b }}

func (w *frameWriter) Write(p []byte) (int, error) {
	if !w.armed {
		return w.Conn.Write(p)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.follow(p)
	// send: p ends at a frame boundary, and nothing asks to wait for more.
	send := w.rest == 0 && w.hn == 0 && !w.held
	if w.buf == nil && send {
		return w.Conn.Write(p) // whole frames in one piece: nothing to join
	}
	if w.buf == nil {
		w.buf = frameBufs.Get().(*[]byte)
	}
	if len(*w.buf)+len(p) > frameHold {
		// Larger than we hold: send what we have, keep going.
		if err := w.flush(); err != nil {
			return 0, err
		}
		if send || len(p) > frameHold {
			return w.Conn.Write(p)
		}
		w.buf = frameBufs.Get().(*[]byte)
	}
	*w.buf = append(*w.buf, p...)
	if send {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// hold makes whole frames wait, until release or until frameHold bytes
// are held. Every hold must be followed by a release.
func (w *frameWriter) hold() {
	w.mu.Lock()
	w.held = true
	w.mu.Unlock()
}

// release ends a hold and writes what it kept.
func (w *frameWriter) release() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held = false
	if w.rest != 0 || w.hn != 0 {
		return nil // mid-frame: the frame's last write flushes it
	}
	return w.flush()
}

// flush writes what is held and gives the buffer back.
func (w *frameWriter) flush() error {
	if w.buf == nil {
		return nil
	}
	_, err := w.Conn.Write(*w.buf)
	*w.buf = (*w.buf)[:0]
	frameBufs.Put(w.buf)
	w.buf = nil
	return err
}

// follow advances the frame parser over p (RFC 6455 section 5.2).
func (w *frameWriter) follow(p []byte) {
	for len(p) > 0 {
		if w.rest > 0 {
			n := uint64(len(p))
			if n > w.rest {
				n = w.rest
			}
			w.rest -= n
			p = p[n:]
			continue
		}
		w.hdr[w.hn] = p[0]
		w.hn++
		p = p[1:]
		if w.hn < 2 {
			continue
		}
		size := 2
		switch w.hdr[1] & 0x7f {
		case 126:
			size += 2
		case 127:
			size += 8
		}
		if w.hdr[1]&0x80 != 0 {
			size += 4 // masking key
		}
		if w.hn < size {
			continue
		}
		switch n := w.hdr[1] & 0x7f; n {
		case 126:
			w.rest = uint64(w.hdr[2])<<8 | uint64(w.hdr[3])
		case 127:
			for _, b := range w.hdr[2:10] {
				w.rest = w.rest<<8 | uint64(b)
			}
		default:
			w.rest = uint64(n)
		}
		w.hn = 0
	}
}
