package sprites

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Link is an open proxy link: raw TCP bytes to a port inside a sprite,
// carried as binary WebSocket messages.
//
// Read returns io.EOF only when the server closed the link with code 1000.
// Every other end is an error: a cut TCP connection when the sprite sleeps,
// and also 1001 "upstream closed", which the real server sends when its read
// from the target failed. websocket.NetConn maps 1001 to io.EOF as well,
// which would let a failed upstream look like complete data; so Link reads
// messages itself.
type Link struct {
	ws     *websocket.Conn
	target atomic.Pointer[string] // as the server reported it, once connected
	seen   atomic.Int64           // unix nanos of the last data or pong received

	// start is set on a Link begun on a Spare: its init went out without
	// waiting, and "connected" is still to come.
	start *spareStart

	// The sprite's message limit, shared by its links and read per write,
	// so that what one link or probe learns applies to all at once.
	client  *Client
	sprite  string
	limit   *msgLimit
	largest atomic.Int64 // the largest message sent, for a 1009's report
	refusal error        // the 1009, once reported

	fw *frameWriter // the connection under ws; nil through an HTTP proxy

	readMu sync.Mutex
	r      io.Reader // current message
	eof    bool

	writeMu sync.Mutex
}

// ErrTextFrame reports a text message after "connected", where only raw
// bytes are allowed.
var ErrTextFrame = errors.New("text frame in the data phase")

func newLink(ws *websocket.Conn, c *Client, sprite string, limit *msgLimit, fw *frameWriter) *Link {
	l := &Link{ws: ws, client: c, sprite: sprite, limit: limit, fw: fw}
	l.touch()
	return l
}

// Target is the address the server connected to, as it reported it; empty
// until then.
func (l *Link) Target() string {
	if t := l.target.Load(); t != nil {
		return *t
	}
	return ""
}

// Connected waits for the server's "connected" on a Link begun with
// Spare.Start, and returns why not if it did not come: an *Error, as Dial
// would have. A Link from Dial is connected already. Reads wait for it
// themselves; writes need not, since the server reads them after it dials.
func (l *Link) Connected(ctx context.Context) error {
	if l.start == nil {
		return nil
	}
	return l.start.wait(ctx, l)
}

// Read reads raw bytes from the sprite, across message boundaries.
func (l *Link) Read(p []byte) (int, error) {
	if err := l.Connected(context.Background()); err != nil {
		return 0, err
	}
	l.readMu.Lock()
	defer l.readMu.Unlock()
	for {
		if l.eof {
			return 0, io.EOF
		}
		if l.r == nil {
			// No context can end a link's reads and writes: CloseNow and
			// Close end any call blocked on it, and in coder/websocket a
			// context that can end costs a context.AfterFunc per message.
			typ, r, err := l.ws.Reader(context.Background())
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusNormalClosure:
					l.eof = true
					return 0, io.EOF
				case websocket.StatusMessageTooBig:
					return 0, l.refused()
				}
				return 0, err
			}
			if typ != websocket.MessageBinary {
				l.ws.CloseNow()
				return 0, ErrTextFrame
			}
			l.r = r
		}
		n, err := l.r.Read(p)
		if n > 0 {
			l.touch()
		}
		if err == io.EOF {
			l.r = nil // end of this message; empty messages carry nothing
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			return n, fmt.Errorf("reading link: %w", err)
		}
		return n, nil
	}
}

// refused reports the server's 1009, once to the client's limit; it is
// called under readMu.
func (l *Link) refused() error {
	if l.refusal == nil {
		sent := int(l.largest.Load())
		l.refusal = &MessageTooBigError{Sprite: l.sprite, Sent: sent, Max: l.client.refused(l.sprite, l.limit, sent)}
	}
	return l.refusal
}

// MaxMessage is the largest message the link sends now: what is known of
// its sprite's limit, which can change while the link is open.
func (l *Link) MaxMessage() int { return int(l.limit.size.Load()) }

// Write sends p as one or more binary messages of at most MaxMessage bytes.
// The messages of one Write leave in as few system calls as the frame
// buffer allows.
func (l *Link) Write(p []byte) (int, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if l.fw != nil && len(p) > l.MaxMessage() {
		l.fw.hold()
		n, err := l.write(p)
		if rerr := l.fw.release(); err == nil && rerr != nil {
			return n, rerr
		}
		return n, err
	}
	return l.write(p)
}

func (l *Link) write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), l.MaxMessage())]
		if int64(len(chunk)) > l.largest.Load() {
			l.largest.Store(int64(len(chunk))) // only this goroutine stores
		}
		if err := l.ws.Write(context.Background(), websocket.MessageBinary, chunk); err != nil { // see Read
			return written, err
		}
		written += len(chunk)
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
func (l *Link) CloseNow() error {
	return l.ws.CloseNow()
}

// Close ends the link with a normal close handshake (code 1000).
func (l *Link) Close() error {
	return l.ws.Close(websocket.StatusNormalClosure, "")
}
