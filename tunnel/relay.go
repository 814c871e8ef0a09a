package tunnel

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/sock"
)

// Remote is the sprite's side of a relay: a proxy link or a mux stream.
// Read must return io.EOF only for a clean end; CloseNow aborts.
type Remote interface {
	io.ReadWriteCloser
	CloseNow() error
}

// RelayOptions tunes one relay. The zero value is usable.
type RelayOptions struct {
	// HalfCloseTimeout ends the relay when, after the client half-closed,
	// the sprite sends nothing for this long. A proxy link cannot carry the
	// half-close, nor tell us when the server inside the sprite closed, so
	// without this bound a finished exchange would hold the link forever.
	// The end is a reset, not a FIN: silence is not proof that the reply
	// was complete. (A client that closed fully never sees it.)
	HalfCloseTimeout time.Duration
	// Ready, if set, closes once the remote is up; the half-close clock
	// does not run before, since a silence then is the setup's, not the
	// sprite's (a connection begun on a spare relays before "connected").
	Ready <-chan struct{}
	// DrainTimeout bounds how long an aborting relay waits for the client's
	// socket to take the bytes already written before it resets, and how
	// long a write to a client that has stopped reading may block it then.
	DrainTimeout time.Duration
	Up, Down     *atomic.Int64 // add bytes client→sprite and sprite→client
	// Busy is set while the relay is blocked writing to the client, so that
	// keepalive does not mistake a slow client for a dead link.
	Busy *atomic.Bool
	// OnClientDone, if set, is called once when the client closes its
	// sending side, from which point the relay only waits for the sprite.
	OnClientDone func()
	// Tick and OnTick let the owner run periodic checks (keepalive) on the
	// relay's own goroutine. An OnTick error ends the relay as a broken link.
	Tick   <-chan time.Time
	OnTick func() error
}

// End says how a relay finished.
type End int

const (
	// EndClean: both sides finished normally; the client saw FIN.
	EndClean End = iota
	// EndLinkBroken: the link died mid-stream. The client got every byte
	// that arrived, then a reset, never a FIN that looks like complete data.
	EndLinkBroken
	// EndClientAborted: the client reset or failed; the link was aborted.
	EndClientAborted
	// EndRemoteSilent: after the client's half-close the sprite said nothing
	// for HalfCloseTimeout; the client was reset.
	EndRemoteSilent
	// EndClientStalled: after its half-close the client took none of the
	// sprite's bytes for HalfCloseTimeout; it was reset.
	EndClientStalled
	// EndPeerReset: the sprite's side reset the connection (a mux stream
	// the agent reset: nothing listens, the target failed).
	EndPeerReset
)

func (e End) String() string {
	return [...]string{"clean", "link broken", "client aborted", "sprite silent after half-close", "client stopped reading after half-close", "reset by the sprite"}[e]
}

// RelayResult reports a finished relay.
type RelayResult struct {
	End End
	Err error // the cause of an abnormal end
	// ClientClosed: the client had closed its side before the end, so a
	// broken link cost it at most the rest of a reply.
	ClientClosed bool
}

// Relay buffers start small (2 KiB: a keystroke, a query) and grow with the traffic. An idle connection
// blocks in Read holding its buffer, so with 10,000 idle connections the
// buffers are most of the daemon's memory; a bulk transfer fills the small
// buffer on its first read and switches to the large one at once.
const (
	smallBuf = 2 << 10
	largeBuf = config.DefaultMaxMessage // one WebSocket message at the default max_message
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}
)

// copyResult tells apart which side of a copy failed: in a proxy a read error
// and a write error mean different things.
type copyResult struct {
	readErr, writeErr error // nil readErr and writeErr: clean EOF
}

func copyCounting(dst io.Writer, src io.Reader, n *atomic.Int64, busy *atomic.Bool, lastRead *atomic.Int64) copyResult {
	pool := &smallBufs
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	quiet := 0 // consecutive reads that used under a quarter of a large buffer
	for {
		buf := *bp
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if lastRead != nil {
				lastRead.Store(time.Now().UnixNano())
			}
			if busy != nil {
				busy.Store(true)
			}
			nw, werr := dst.Write(buf[:nr])
			if busy != nil {
				busy.Store(false)
			}
			if n != nil {
				n.Add(int64(nw))
			}
			if werr == nil && nw < nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return copyResult{writeErr: werr}
			}
		}
		if rerr == io.EOF {
			return copyResult{}
		}
		if rerr != nil {
			return copyResult{readErr: rerr}
		}
		switch {
		case pool == &smallBufs && nr == len(buf):
			pool.Put(bp)
			pool = &largeBufs
			bp, quiet = pool.Get().(*[]byte), 0
		case pool == &largeBufs && nr < largeBuf/4:
			if quiet++; quiet >= 8 {
				pool.Put(bp)
				pool = &smallBufs
				bp = pool.Get().(*[]byte)
			}
		default:
			quiet = 0
		}
	}
}

// Relay copies bytes between the client and the sprite until both are done,
// and always closes both before it returns. Its contract:
//
//   - The sprite ends cleanly (Remote.Read returns io.EOF): the client gets
//     FIN after the last byte, and the relay ends.
//   - The client half-closes: the sprite's replies keep flowing until it
//     ends, or falls silent for HalfCloseTimeout, which resets the client.
//   - The link breaks: every byte already received is written to the client
//     and, within DrainTimeout, taken off its socket; then the client is
//     reset, so it cannot mistake the cut for the end of the data.
//   - The client resets or a write to it fails: the link is aborted.
//
// Every end is bounded in time, whatever the client does: a client that
// stops reading after its half-close is reset after HalfCloseTimeout, and
// one that stops reading as the relay ends holds it for DrainTimeout at
// most. (A client that stops reading while both sides are open is TCP flow
// control, as through ssh -L: it holds its connection until it closes, or
// until its forward stops and resets it.)
func Relay(local sock.Conn, remote Remote, opts RelayOptions) RelayResult {
	up := make(chan copyResult, 1)
	down := make(chan copyResult, 1)
	var lastDown atomic.Int64
	lastDown.Store(time.Now().UnixNano())
	busy := opts.Busy
	if busy == nil {
		busy = new(atomic.Bool)
	}
	go func() { up <- copyCounting(remote, local, opts.Up, nil, nil) }()
	go func() { down <- copyCounting(local, remote, opts.Down, busy, &lastDown) }()
	// awaitDown waits for the down copy once the link is closed: it may be
	// blocked writing to a client that does not read, which only a deadline
	// ends. The client keeps what it took by then.
	awaitDown := func() copyResult {
		_ = local.SetWriteDeadline(time.Now().Add(opts.DrainTimeout))
		return <-down
	}

	var (
		idle     *time.Ticker
		idleC    <-chan time.Time
		upCh     = up
		result   RelayResult
		finished bool
	)
	// abort tears both sides down; the other copy then ends with an error
	// that no longer matters, and is drained below.
	abort := func(end End, err error) {
		result = RelayResult{End: end, Err: err}
		finished = true
		_ = remote.CloseNow()
		if end == EndLinkBroken {
			sock.Abort(local, opts.DrainTimeout)
		} else {
			sock.Reset(local)
		}
	}
	clientClosed := false
	var tickErr error
	for !finished {
		select {
		case r := <-upCh:
			upCh = nil
			switch {
			case r.readErr != nil:
				abort(EndClientAborted, r.readErr)
				<-down
			case r.writeErr != nil:
				// The link failed under a write. The down copy normally sees
				// the same failure at once; let it deliver what it has first.
				var d copyResult
				select {
				case d = <-down:
				case <-time.After(time.Second):
					_ = remote.CloseNow()
					d = awaitDown()
				}
				err := d.readErr
				if err == nil {
					err = r.writeErr
				}
				abort(EndLinkBroken, err)
			default:
				clientClosed = true
				// The sprite's silence counts from now, not from before it
				// had anything to answer.
				lastDown.Store(max(lastDown.Load(), time.Now().UnixNano()))
				if opts.OnClientDone != nil {
					opts.OnClientDone()
				}
				if opts.HalfCloseTimeout > 0 {
					idle = time.NewTicker(max(opts.HalfCloseTimeout/4, time.Millisecond))
					idleC = idle.C
				}
			}
		case d := <-down:
			switch {
			case d.writeErr != nil:
				abort(EndClientAborted, d.writeErr)
			case d.readErr != nil:
				abort(EndLinkBroken, d.readErr)
			default:
				_ = local.CloseWrite()
				_ = remote.Close()
				_ = local.Close()
				result, finished = RelayResult{End: EndClean}, true
			}
			if upCh != nil {
				<-upCh
			}
		case <-opts.Tick:
			if err := opts.OnTick(); err != nil {
				// The copies see the link fail and end the relay as broken,
				// after delivering what already arrived.
				tickErr = err
				_ = remote.CloseNow()
			}
		case <-idleC:
			if opts.Ready != nil {
				select {
				case <-opts.Ready:
				default:
					lastDown.Store(time.Now().UnixNano()) // counts from the setup's end
					continue
				}
			}
			if time.Since(time.Unix(0, lastDown.Load())) < opts.HalfCloseTimeout {
				continue
			}
			// Nothing came down for the whole timeout after the client
			// finished: either the sprite said nothing (whether its reply
			// was complete is unknowable here), or the client took nothing
			// and the down copy is stuck writing to it. Either way the
			// client is reset first, which also unblocks that write.
			end := EndRemoteSilent
			if busy.Load() {
				end = EndClientStalled
			}
			sock.Reset(local)
			_ = remote.CloseNow()
			<-down
			result, finished = RelayResult{End: end}, true
		}
	}
	if idle != nil {
		idle.Stop()
	}
	result.ClientClosed = clientClosed
	if tickErr != nil && result.End == EndLinkBroken {
		result.Err = tickErr
	}
	return result
}

// ErrLinkDead reports a link that stopped answering pings.
var ErrLinkDead = errors.New("link stopped answering pings")
