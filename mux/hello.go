package mux

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// Before yamux starts, the agent and the daemon shake hands on the raw
// link. The agent speaks first, with a nonce; the daemon proves it knows the
// deployment secret with an HMAC over that nonce and its session id, so the
// secret never crosses the wire and an old proof cannot be replayed.
//
//	agent  → "SFWD" version nonce[32]
//	daemon → "SFWD" version session[16] window_ms[4] buffer[4] mac[32]
//	agent  → status[1] resumed[1] len[2] message
const (
	magic        = "SFWD"
	Version      = 1
	nonceLen     = 32
	challengeLen = len(magic) + 1 + nonceLen
	helloLen     = len(magic) + 1 + 16 + 4 + 4 + sha256.Size
)

// Hello statuses.
const (
	statusOK byte = iota
	statusBadSecret
	statusBadHello
)

var (
	// ErrBadSecret: the agent refused our proof. The running agent belongs
	// to another deployment; redeploy.
	ErrBadSecret = errors.New("agent refused the deployment secret")
	// ErrVersion: the agent speaks another protocol version; redeploy.
	ErrVersion = errors.New("agent speaks another protocol version")
	// ErrNotAgent: whatever listens on the agent's port is not an agent.
	ErrNotAgent = errors.New("not a spritefwd agent")
)

// SessionID names a daemon's session across redials, so that the agent can
// hand its streams to the new link.
type SessionID [16]byte

// NewSessionID returns a random session id.
func NewSessionID() SessionID {
	var id SessionID
	_, _ = rand.Read(id[:])
	return id
}

func (id SessionID) String() string { return hex.EncodeToString(id[:4]) }

// NewSecret returns a fresh deployment secret, as text for a file.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Hello is what the daemon asks of a session.
type Hello struct {
	Session SessionID
	// ResumeWindow is how long the agent keeps a stream whose link dropped.
	ResumeWindow time.Duration
	// Buffer bounds each stream's replay buffer, at both ends.
	Buffer int
}

func mac(secret string, nonce []byte, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("spritefwd agent hello\x00"))
	m.Write(nonce)
	m.Write(body)
	return m.Sum(nil)
}

// ClientHello runs the daemon's side of the handshake. resumed reports that
// the agent still knew the session, so its streams can resume.
func ClientHello(rw io.ReadWriter, secret string, h Hello) (resumed bool, err error) {
	ch := make([]byte, challengeLen)
	if _, err := io.ReadFull(rw, ch); err != nil {
		return false, fmt.Errorf("agent hello: %w", err)
	}
	if string(ch[:4]) != magic {
		return false, fmt.Errorf("%w: it sent %q", ErrNotAgent, clip(ch[:4]))
	}
	if ch[4] != Version {
		return false, fmt.Errorf("%w (agent %d, daemon %d)", ErrVersion, ch[4], Version)
	}
	out := make([]byte, helloLen)
	copy(out, magic)
	out[4] = Version
	body := out[5 : helloLen-sha256.Size]
	copy(body, h.Session[:])
	binary.BigEndian.PutUint32(body[16:], uint32(h.ResumeWindow/time.Millisecond))
	binary.BigEndian.PutUint32(body[20:], uint32(h.Buffer))
	copy(out[helloLen-sha256.Size:], mac(secret, ch[5:], body))
	if _, err := rw.Write(out); err != nil {
		return false, fmt.Errorf("agent hello: %w", err)
	}
	var st [4]byte
	if _, err := io.ReadFull(rw, st[:]); err != nil {
		return false, fmt.Errorf("agent hello reply: %w", err)
	}
	msg := make([]byte, binary.BigEndian.Uint16(st[2:]))
	if _, err := io.ReadFull(rw, msg); err != nil {
		return false, fmt.Errorf("agent hello reply: %w", err)
	}
	switch st[0] {
	case statusOK:
		return st[1] == 1, nil
	case statusBadSecret:
		return false, ErrBadSecret
	}
	return false, fmt.Errorf("%w: agent says %s", ErrProtocol, clip(msg))
}

// AcceptHello runs the agent's side. known reports whether a session id is
// one whose streams the agent still holds; the reply tells the daemon.
func AcceptHello(rw io.ReadWriter, secret string, known func(SessionID) bool) (Hello, bool, error) {
	ch := make([]byte, challengeLen)
	copy(ch, magic)
	ch[4] = Version
	_, _ = rand.Read(ch[5:])
	if _, err := rw.Write(ch); err != nil {
		return Hello{}, false, err
	}
	in := make([]byte, helloLen)
	if _, err := io.ReadFull(rw, in); err != nil {
		return Hello{}, false, fmt.Errorf("%w: short hello: %w", ErrBadSecret, err)
	}
	reply := func(status, resumed byte, msg string) {
		b := make([]byte, 4+len(msg))
		b[0], b[1] = status, resumed
		binary.BigEndian.PutUint16(b[2:], uint16(len(msg)))
		copy(b[4:], msg)
		_, _ = rw.Write(b)
	}
	if string(in[:4]) != magic || in[4] != Version {
		reply(statusBadHello, 0, "bad hello")
		return Hello{}, false, fmt.Errorf("%w: bad hello", ErrProtocol)
	}
	body := in[5 : helloLen-sha256.Size]
	if !hmac.Equal(in[helloLen-sha256.Size:], mac(secret, ch[5:], body)) {
		reply(statusBadSecret, 0, "bad secret")
		return Hello{}, false, ErrBadSecret
	}
	var h Hello
	copy(h.Session[:], body)
	h.ResumeWindow = time.Duration(binary.BigEndian.Uint32(body[16:])) * time.Millisecond
	h.Buffer = int(binary.BigEndian.Uint32(body[20:]))
	if h.Buffer < minBuffer || h.Buffer > maxBuffer {
		reply(statusBadHello, 0, "buffer out of range")
		return Hello{}, false, fmt.Errorf("%w: buffer %d out of range", ErrProtocol, h.Buffer)
	}
	resumed := known != nil && known(h.Session)
	var r byte
	if resumed {
		r = 1
	}
	reply(statusOK, r, "")
	return h, resumed, nil
}

func clip(b []byte) string {
	const limit = 64
	if len(b) > limit {
		b = b[:limit]
	}
	return fmt.Sprintf("%q", b)
}
