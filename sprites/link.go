package sprites

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Link is an open proxy link: a net.Conn whose bytes travel as binary
// WebSocket messages to a TCP port inside a sprite.
//
// Read returns io.EOF only when the server closed the link cleanly (close
// code 1000 or 1001). Any other end, such as a cut TCP connection when the
// sprite sleeps, is a non-EOF error, so that callers never mistake a broken
// link for the end of the data.
type Link struct {
	net.Conn
	ws         *websocket.Conn
	target     string
	maxMessage int
	seen       atomic.Int64 // unix nanos of the last data or pong received
}

// Target is the address the server connected to, as it reported it.
func (l *Link) Target() string { return l.target }

// Read reads raw bytes from the sprite.
func (l *Link) Read(p []byte) (int, error) {
	n, err := l.Conn.Read(p)
	if n > 0 {
		l.touch()
	}
	return n, err
}

// Write sends p as one or more binary messages of at most MaxMessage bytes.
func (l *Link) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > l.maxMessage {
			chunk = chunk[:l.maxMessage]
		}
		n, err := l.Conn.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		p = p[len(chunk):]
	}
	return written, nil
}

// Ping sends a WebSocket ping and waits for its pong. It needs a concurrent
// Read to receive the pong; see LastSeen for the passive alternative.
func (l *Link) Ping(ctx context.Context) error { return l.ws.Ping(ctx) }

// LastSeen is when the link last received data or a pong. A relay whose
// reader is stalled writing to a slow client receives no pongs, so liveness
// should be judged on this together with the relay's own state.
func (l *Link) LastSeen() time.Time { return time.Unix(0, l.seen.Load()) }

func (l *Link) touch() { l.seen.Store(time.Now().UnixNano()) }

// CloseNow tears the link down without a close handshake. Use it after an
// error, where the full handshake in Close could wait for seconds.
func (l *Link) CloseNow() error { return l.ws.CloseNow() }

// Close ends the link with a normal close handshake.
func (l *Link) Close() error { return l.Conn.Close() }
