package mux

import (
	"bytes"
	"crypto/cipher"
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
// link, and each proves to the other that it knows the deployment secret:
// anything in the sprite can listen on the agent's port, and anyone with
// the API token can reach it. Each side sends a fresh nonce, and each proof
// is an HMAC over both nonces, so the secret never crosses the wire and an
// old proof cannot be replayed. A label per direction keeps a proof from
// being reflected back as the other side's.
//
//	daemon → "SFWD" version 'D' nonce[32]               (at once)
//	agent  → "SFWD" version 'A' nonce[32]               (at once)
//	daemon → session[16] window_ms[4] buffer[4] mac[32]  (daemon's proof)
//	agent  → status[1] resumed[1] len[2] message, then mac[32] if status is OK (agent's proof)
//	daemon → sealed records, the last one empty once the agent's proof is checked (see sealer)
//
// Both greetings go out before either side reads, so the handshake costs
// the daemon one round trip once the link is up. The daemon reads the
// agent's version before the rest of its greeting: an agent of another
// version is told apart at once, never waited on.
const (
	magic = "SFWD"
	// Version 3 added reset codes (see ResetCode): a version 2 agent says
	// why it reset a stream in text only, so a daemon redeploys it rather
	// than guess from its words.
	//
	// Version 4 added port watching (the watch and ports frames). A version
	// 3 agent would take a watch for a broken carrier; the daemon redeploys
	// it, as for every change of version, which costs nothing: the streams
	// it held belonged to a daemon that is gone.
	//
	// Version 5 grows each stream's window from StartWindow on a budget. A
	// version 4 agent would take the hello's buffer, now 64 MiB, for every
	// stream's fixed window, with no budget over them.
	//
	// Version 6 seals what the daemon sends between its proof and the
	// agent's (see sealer), so that a new link's first stream need not wait
	// a round trip for the agent's proof. A version 5 agent would read the
	// sealed records as yamux.
	Version  = 6
	nonceLen = 32
	// greetingLen is magic, version, role and nonce.
	greetingLen = len(magic) + 1 + 1 + nonceLen
	bodyLen     = 16 + 4 + 4
	proofLen    = bodyLen + sha256.Size
	roleDaemon  = 'D'
	roleAgent   = 'A'
)

// Hello statuses.
const (
	statusOK byte = iota
	statusBadSecret
	statusBadHello
)

// The labels of the two proofs.
const (
	labelDaemon = "spritefwd v2 daemon proof\x00"
	labelAgent  = "spritefwd v2 agent proof\x00"
)

var (
	// ErrBadSecret: the agent refused our proof. The running agent belongs
	// to another deployment; redeploy.
	ErrBadSecret = errors.New("agent refused the deployment secret")
	// ErrVersion: the agent speaks another protocol version; redeploy.
	ErrVersion = errors.New("agent speaks another protocol version")
	// ErrNotAgent: whatever listens on the agent's port is not an agent.
	ErrNotAgent = errors.New("not a spritefwd agent")
	// ErrAgentProof: what answered on the agent's port accepted us but
	// could not prove it knows the deployment secret. It is not our agent,
	// whatever it says: nothing may be sent to it.
	ErrAgentProof = errors.New("failed the agent's proof of the deployment secret")
)

// errWrongProof: what answered sent a whole proof, and it is wrong. Unlike
// an answer cut short, that is a verdict: it does not know the secret.
var errWrongProof = fmt.Errorf("%w: its proof is wrong", ErrAgentProof)

// lacksSecret reports a handshake that failed because the peer does not
// know the secret: it refused our proof, or made a wrong one of its own.
// Such a peer cannot have opened what the daemon sealed behind its proof.
func lacksSecret(err error) bool {
	return errors.Is(err, ErrBadSecret) || errors.Is(err, errWrongProof)
}

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
	// Resume lists streams that wait for this session, with their
	// received counts. Their resume frames follow our proof without
	// waiting for the agent's (see Dial); they are not part of the hello.
	Resume []StreamCount
	// open lists new streams waiting for this session. Their opens and
	// first bytes follow our proof, sealed, and the first link to take one
	// is the only one (see Dial).
	open []earlyOpen
}

// earlyOpen is a new stream and its target.
type earlyOpen struct {
	st   *Stream
	host string
	port int
}

// StreamCount is a stream's id and received count: what a resume frame
// says.
type StreamCount struct {
	ID, Received uint64
}

// proof is one side's HMAC. Both nonces are always given daemon's first,
// so that the two sides compute over the same bytes.
func proof(secret, label string, daemonNonce, agentNonce []byte, rest ...[]byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(label))
	m.Write(daemonNonce)
	m.Write(agentNonce)
	for _, b := range rest {
		m.Write(b)
	}
	return m.Sum(nil)
}

func greeting(role byte) []byte {
	g := make([]byte, greetingLen)
	copy(g, magic)
	g[4] = Version
	g[5] = role
	_, _ = rand.Read(g[6:])
	return g
}

// greetingError is a greeting refused: of another version, or not
// spritefwd's at all. Each side names the culprit its own way.
type greetingError struct {
	otherVersion bool
	detail       string
}

func (e *greetingError) Error() string { return e.detail }

// readGreeting reads the peer's greeting and returns its nonce. It reads
// the version before the rest, so that a peer of another version, which
// sends and awaits other lengths, is refused rather than waited on.
func readGreeting(r io.Reader, role byte) ([]byte, error) {
	head := make([]byte, len(magic)+1)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, err
	}
	if string(head[:4]) != magic {
		return nil, &greetingError{detail: "it sent " + clip(head[:4])}
	}
	if head[4] != Version {
		return nil, &greetingError{otherVersion: true, detail: fmt.Sprintf("it speaks version %d, we speak %d", head[4], Version)}
	}
	rest := make([]byte, 1+nonceLen)
	if _, err := io.ReadFull(r, rest); err != nil {
		return nil, err
	}
	if rest[0] != role {
		return nil, &greetingError{detail: fmt.Sprintf("it greeted as %s, not %q", clip(rest[:1]), role)}
	}
	return rest[1:], nil
}

// ClientHello runs the daemon's side of the handshake. resumed reports that
// the agent still knew the session, so its streams can resume. It returns
// nil only once the agent has proved the secret: until then nothing but
// the handshake is sent. rw must take the greeting without its peer
// reading (a socket or a WebSocket does; net.Pipe does not), since both
// sides greet at once.
func ClientHello(rw io.ReadWriter, secret string, h Hello) (resumed bool, err error) {
	p, err := clientProve(rw, secret, h)
	if err != nil {
		return false, err
	}
	return p.verify(rw, secret)
}

// provenHello is the daemon's half of a handshake whose proof is sent: the
// agent's answer is still to be read and checked (verify).
type provenHello struct {
	ours, theirs, body []byte
}

// clientProve greets, reads the agent's greeting and sends our proof.
func clientProve(rw io.ReadWriter, secret string, h Hello) (*provenHello, error) {
	ours := greeting(roleDaemon)
	if _, err := rw.Write(ours); err != nil {
		return nil, fmt.Errorf("agent hello: %w", err)
	}
	theirs, err := readGreeting(rw, roleAgent)
	var ge *greetingError
	switch {
	case errors.As(err, &ge) && ge.otherVersion:
		return nil, fmt.Errorf("agent hello: %w (%s); refusing it", ErrVersion, ge.detail)
	case errors.As(err, &ge):
		return nil, fmt.Errorf("agent hello: %w: %s", ErrNotAgent, ge.detail)
	case err != nil:
		return nil, fmt.Errorf("agent hello: %w", err)
	}
	if bytes.Equal(theirs, ours[6:]) {
		// Only a reflection sends our nonce back: 2^-256 otherwise.
		return nil, fmt.Errorf("%w: it sent our own nonce back", ErrNotAgent)
	}
	out := make([]byte, proofLen)
	body := out[:bodyLen]
	copy(body, h.Session[:])
	binary.BigEndian.PutUint32(body[16:], uint32(h.ResumeWindow/time.Millisecond))
	binary.BigEndian.PutUint32(body[20:], uint32(h.Buffer))
	copy(out[bodyLen:], proof(secret, labelDaemon, ours[6:], theirs, body))
	if _, err := rw.Write(out); err != nil {
		return nil, fmt.Errorf("agent hello: %w", err)
	}
	return &provenHello{ours: ours, theirs: theirs, body: body}, nil
}

// sealKey is the key of what the daemon sends before the agent's proof is
// read (see sealer).
func (p *provenHello) sealKey(secret string) cipher.AEAD {
	return sealKey(secret, p.ours[6:], p.theirs, p.body)
}

// verify reads the agent's answer to our proof and checks its own.
func (p *provenHello) verify(r io.Reader, secret string) (resumed bool, err error) {
	var st [4]byte
	if _, err := io.ReadFull(r, st[:]); err != nil {
		return false, fmt.Errorf("agent hello reply: %w", err)
	}
	msg := make([]byte, binary.BigEndian.Uint16(st[2:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return false, fmt.Errorf("agent hello reply: %w", err)
	}
	switch st[0] {
	case statusOK:
	case statusBadSecret:
		return false, ErrBadSecret
	default:
		return false, fmt.Errorf("%w: agent says %s", ErrProtocol, clip(msg))
	}
	if st[1] > 1 {
		return false, fmt.Errorf("%w: resumed flag %d", ErrAgentProof, st[1])
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, got); err != nil {
		return false, fmt.Errorf("%w: no proof after its status: %w", ErrAgentProof, err)
	}
	if !hmac.Equal(got, proof(secret, labelAgent, p.ours[6:], p.theirs, p.body, st[:2])) {
		return false, errWrongProof
	}
	return st[1] == 1, nil
}

// AcceptHello runs the agent's side. known reports whether a session id is
// one whose streams the agent still holds; the reply tells the daemon. The
// agent proves the secret only to a daemon that has proved it first, so
// that a stranger cannot use the agent to make proofs.
func AcceptHello(rw io.ReadWriter, secret string, known func(SessionID) bool) (Hello, bool, error) {
	h, resumed, _, err := acceptHello(rw, secret, known)
	return h, resumed, err
}

// acceptHello is AcceptHello that also returns the key of the daemon's
// sealed records, which follow its proof on the link.
func acceptHello(rw io.ReadWriter, secret string, known func(SessionID) bool) (Hello, bool, cipher.AEAD, error) {
	ours := greeting(roleAgent)
	if _, err := rw.Write(ours); err != nil {
		return Hello{}, false, nil, err
	}
	reply := func(status, resumed byte, msg string, mac []byte) {
		b := make([]byte, 4+len(msg), 4+len(msg)+len(mac))
		b[0], b[1] = status, resumed
		binary.BigEndian.PutUint16(b[2:], uint16(len(msg)))
		copy(b[4:], msg)
		_, _ = rw.Write(append(b, mac...)) // one write: the proof never trails its status
	}
	theirs, err := readGreeting(rw, roleDaemon)
	if err != nil {
		if ge := (*greetingError)(nil); errors.As(err, &ge) {
			reply(statusBadHello, 0, "bad hello", nil)
			return Hello{}, false, nil, fmt.Errorf("%w: bad hello from the daemon: %s", ErrProtocol, ge.detail)
		}
		return Hello{}, false, nil, fmt.Errorf("%w: short hello: %w", ErrBadSecret, err)
	}
	in := make([]byte, proofLen)
	if _, err := io.ReadFull(rw, in); err != nil {
		return Hello{}, false, nil, fmt.Errorf("%w: short hello: %w", ErrBadSecret, err)
	}
	body := in[:bodyLen]
	if !hmac.Equal(in[bodyLen:], proof(secret, labelDaemon, theirs, ours[6:], body)) {
		reply(statusBadSecret, 0, "bad secret", nil)
		return Hello{}, false, nil, ErrBadSecret
	}
	var h Hello
	copy(h.Session[:], body)
	h.ResumeWindow = time.Duration(binary.BigEndian.Uint32(body[16:])) * time.Millisecond
	h.Buffer = int(binary.BigEndian.Uint32(body[20:]))
	if h.Buffer < minBuffer || h.Buffer > maxBuffer {
		reply(statusBadHello, 0, "buffer out of range", nil)
		return Hello{}, false, nil, fmt.Errorf("%w: buffer %d out of range", ErrProtocol, h.Buffer)
	}
	resumed := known != nil && known(h.Session)
	var r byte
	if resumed {
		r = 1
	}
	reply(statusOK, r, "", proof(secret, labelAgent, theirs, ours[6:], body, []byte{statusOK, r}))
	return h, resumed, sealKey(secret, theirs, ours[6:], body), nil
}

func clip(b []byte) string {
	const limit = 64
	if len(b) > limit {
		b = b[:limit]
	}
	return fmt.Sprintf("%q", b)
}
