package sprites

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// The service's limit on the size of a client's WebSocket messages is not
// published, and it differs between versions of the server inside a sprite:
// the November 2025 server reads at most 1,024 bytes per message and closes
// a link that sends more with 1009, dropping its target connection, while
// others accept megabytes. A Client learns the limit per sprite without
// losing a connection. Until it knows, links send at most SafeMessage bytes
// per message. Once the first link is up, one probe link beside it, whose
// init message is MaxMessage bytes of JSON naming port 0, finds out in one
// round trip without dialling any target: the server refuses the message
// (1009) or reads it and rejects the port (1003). A 1009 on a live link
// lowers the limit as well.

// SafeMessage is the largest client message that every known version of
// the service accepts.
const SafeMessage = 1024

// minMessage is the floor when a live link is refused a message of at most
// SafeMessage bytes, which no known server does.
const minMessage = 128

// DefaultLimitRecheck is how long a refused size stands before a probe
// tries it again: the service can change under a running daemon.
const DefaultLimitRecheck = 10 * time.Minute

// probeRetry spaces probes that found out nothing (the sprite was waking,
// the network failed). Probes only run when a link is dialled anyway.
const probeRetry = 5 * time.Second

// LimitState is what a Client knows of one sprite's message limit.
type LimitState string

const (
	// LimitUnknown: not learned yet; links send at most SafeMessage bytes.
	LimitUnknown LimitState = "unknown"
	// LimitAccepted: the sprite accepted a MaxMessage-byte message.
	LimitAccepted LimitState = "accepted"
	// LimitRefused: the sprite refused MaxMessage bytes; links send at most
	// SafeMessage (less after a refusal at that size) until the recheck.
	LimitRefused LimitState = "refused"
	// LimitConfigured: MaxMessage is at most SafeMessage; nothing to learn.
	LimitConfigured LimitState = "configured"
)

// ErrMessageTooBig reports that the service closed a live link with 1009
// because a message was larger than it reads.
var ErrMessageTooBig = errors.New("message too big for the service")

// MessageTooBigError is a live link's 1009: what was refused and what the
// client sends from now on. It matches ErrMessageTooBig.
type MessageTooBigError struct {
	Sprite string
	Sent   int // the largest message this link had sent
	Max    int // the size sent from now on
}

func (e *MessageTooBigError) Error() string {
	return fmt.Sprintf("the service refused a message of %d bytes on sprite %s; sending at most %d from now on", e.Sent, e.Sprite, e.Max)
}

func (e *MessageTooBigError) Unwrap() error { return ErrMessageTooBig }

// MessageLimit is a snapshot of what a Client knows of one sprite's limit.
type MessageLimit struct {
	Bytes    int        `json:"bytes"` // the largest message links send now
	State    LimitState `json:"state"`
	Since    time.Time  `json:"since,omitzero"`     // when State was learned
	Probes   int64      `json:"probes"`             // probe links opened
	Refusals int64      `json:"refusals,omitempty"` // live links closed with 1009
}

// LimitEvent reports what a probe or a refusal taught a Client.
type LimitEvent struct {
	Sprite string
	Limit  MessageLimit // after the event
	// Refused is the size a live link was refused, or 0 for a probe.
	Refused int
	// Err is why a probe found out nothing; Limit is then unchanged.
	Err error
}

// msgLimit is one sprite's limit. size is read on every write; the rest
// changes rarely, under mu.
type msgLimit struct {
	size atomic.Int64

	mu      sync.Mutex
	lim     MessageLimit // Bytes is not kept here: size is the truth
	probing bool
	next    time.Time // no probe before this
}

func (l *msgLimit) snapshotLocked() MessageLimit {
	s := l.lim
	s.Bytes = int(l.size.Load())
	return s
}

// limitFor returns the sprite's limit, made on first use.
func (c *Client) limitFor(sprite string) *msgLimit {
	c.limitsMu.Lock()
	defer c.limitsMu.Unlock()
	l, ok := c.limits[sprite]
	if !ok {
		l = &msgLimit{}
		if c.maxMessage <= SafeMessage {
			l.size.Store(int64(c.maxMessage))
			l.lim.State = LimitConfigured
		} else {
			l.size.Store(SafeMessage)
			l.lim.State = LimitUnknown
		}
		c.limits[sprite] = l
	}
	return l
}

// MessageLimit reports what the client knows of sprite's message limit.
func (c *Client) MessageLimit(sprite string) MessageLimit {
	l := c.limitFor(sprite)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snapshotLocked()
}

// maybeProbe starts a probe of sprite's limit in the background if the
// limit is unknown, or was refused long enough ago to try again.
func (c *Client) maybeProbe(sprite string, l *msgLimit) {
	now := c.now()
	l.mu.Lock()
	need := !l.probing && (l.lim.State == LimitUnknown || l.lim.State == LimitRefused) && !now.Before(l.next)
	if need {
		l.probing = true
	}
	l.mu.Unlock()
	if !need {
		return
	}
	c.limitsMu.Lock()
	if c.closed {
		c.limitsMu.Unlock()
		l.mu.Lock()
		l.probing = false
		l.mu.Unlock()
		return
	}
	c.probes.Add(1)
	c.limitsMu.Unlock()
	go func() {
		defer c.probes.Done()
		ctx, cancel := context.WithTimeout(c.probeCtx, c.handshake)
		defer cancel()
		accepted, err := c.probe(ctx, sprite)
		c.learn(sprite, l, accepted, err)
	}()
}

// learn records a probe's outcome and reports it.
func (c *Client) learn(sprite string, l *msgLimit, accepted bool, err error) {
	now := c.now()
	l.mu.Lock()
	l.probing = false
	l.lim.Probes++
	switch {
	case err != nil:
		l.next = now.Add(probeRetry)
	case accepted:
		l.size.Store(int64(c.maxMessage))
		l.lim.State, l.lim.Since = LimitAccepted, now
	default:
		l.size.Store(min(l.size.Load(), SafeMessage))
		l.lim.State, l.lim.Since = LimitRefused, now
		l.next = now.Add(c.recheck)
	}
	ev := LimitEvent{Sprite: sprite, Limit: l.snapshotLocked(), Err: err}
	l.mu.Unlock()
	if c.onLimit != nil {
		c.onLimit(ev)
	}
}

// refused records that a live link to sprite was closed with 1009 after
// sending messages of up to sent bytes, and returns the size to send now.
func (c *Client) refused(sprite string, l *msgLimit, sent int) int {
	now := c.now()
	l.mu.Lock()
	cur := int(l.size.Load())
	next := SafeMessage
	if sent <= SafeMessage {
		next = max(min(sent, cur)/2, minMessage)
	}
	next = min(next, cur)
	l.size.Store(int64(next))
	l.lim.State, l.lim.Since = LimitRefused, now
	l.lim.Refusals++
	l.next = now.Add(c.recheck)
	ev := LimitEvent{Sprite: sprite, Limit: l.snapshotLocked(), Refused: sent}
	l.mu.Unlock()
	if c.onLimit != nil {
		c.onLimit(ev)
	}
	return next
}

// probeInit is the probe's init message: valid JSON for port 0, which the
// server rejects (1003, "Invalid port number") only after it has read the
// whole message. JSON allows the trailing spaces that pad it to size.
const probeInit = `{"host":"localhost","port":0}`

// probe asks whether sprite reads a message of MaxMessage bytes. It
// reports accepted, or refused (false, nil), or an error when the answer
// says neither.
func (c *Client) probe(ctx context.Context, sprite string) (accepted bool, err error) {
	ws, _, err := c.upgrade(ctx, ctx, sprite, 0, "", nil)
	if err != nil {
		return false, err
	}
	defer ws.CloseNow()
	msg := make([]byte, max(c.maxMessage, len(probeInit)))
	copy(msg, probeInit)
	for i := len(probeInit); i < len(msg); i++ {
		msg[i] = ' '
	}
	werr := ws.Write(ctx, websocket.MessageText, msg)
	_, _, rerr := ws.Read(ctx)
	var ce websocket.CloseError
	switch {
	case errors.As(rerr, &ce) && ce.Code == websocket.StatusMessageTooBig:
		return false, nil
	case errors.As(rerr, &ce) && (ce.Code == websocket.StatusUnsupportedData || ce.Code == websocket.StatusInternalError):
		// The init was read whole, then its port rejected or not dialled.
		return true, nil
	case rerr == nil:
		// A server that took port 0 and said "connected" read it whole too.
		return true, nil
	case werr != nil && !errors.As(rerr, &ce):
		return false, fmt.Errorf("sprite %s: message size probe: %w", sprite, werr)
	}
	return false, fmt.Errorf("sprite %s: message size probe: %w", sprite, rerr)
}
