package mux

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// The daemon sends the first stream of a new link, its open frame and
// the client's first bytes, right behind its proof, one round trip before
// the agent's proof can come back. Until that proof is checked, whatever
// listens on the agent's port may not be the agent, so those bytes travel
// sealed: in records that only a holder of the deployment secret can open,
// under a key bound to both of this handshake's nonces, so that nothing
// sealed for one link opens on another. Once the agent has proved the
// secret, the daemon sends an empty record, and the link carries yamux in
// the clear from then on, as it always did after the handshake.
//
//	record: len[2] ciphertext[len]   (AES-256-GCM; the nonce counts records)
//
// A record's plaintext is never empty but the last one's.
const (
	labelSeal = "spritefwd v6 early data\x00"
	// maxSealed bounds a record's plaintext, so that the agent reads a
	// bounded record however the daemon's writes fall.
	maxSealed = maxChunk
	sealTag   = 16
)

// sealKey is the key of a link's early data.
func sealKey(secret string, daemonNonce, agentNonce, body []byte) cipher.AEAD {
	k := proof(secret, labelSeal, daemonNonce, agentNonce, body)
	block, err := aes.NewCipher(k)
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// sealer is the daemon's side of the link while it waits for the agent's
// proof: it seals what it writes until finish, then passes it through.
// Reads pass through.
type sealer struct {
	io.ReadWriteCloser
	mu    sync.Mutex
	aead  cipher.AEAD // nil once finished
	count uint64
	buf   []byte
}

func newSealer(link io.ReadWriteCloser, aead cipher.AEAD) *sealer {
	return &sealer{ReadWriteCloser: link, aead: aead}
}

func (s *sealer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead == nil {
		return s.ReadWriteCloser.Write(p)
	}
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxSealed)]
		if err := s.seal(chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// finish ends the sealed part with an empty record: the agent has proved
// the secret, and what follows goes in the clear.
func (s *sealer) finish() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead == nil {
		return nil
	}
	err := s.seal(nil)
	s.aead, s.buf = nil, nil
	return err
}

func (s *sealer) seal(p []byte) error {
	var nonce [12]byte
	binary.BigEndian.PutUint64(nonce[4:], s.count)
	s.count++
	b := append(s.buf[:0], 0, 0)
	b = s.aead.Seal(b, nonce[:], p, nil)
	binary.BigEndian.PutUint16(b, uint16(len(b)-2))
	s.buf = b
	_, err := s.ReadWriteCloser.Write(b)
	return err
}

// unsealer is the agent's side: it opens the daemon's sealed records until
// the empty one, then reads the link as it is. A record that does not open
// fails the link: it was not sealed by this handshake's daemon. Writes
// pass through.
type unsealer struct {
	io.ReadWriteCloser
	aead  cipher.AEAD // nil after the last record
	count uint64
	rec   []byte // a record's ciphertext, opened in place
	plain []byte // what is opened and not yet read
}

func newUnsealer(link io.ReadWriteCloser, aead cipher.AEAD) *unsealer {
	return &unsealer{ReadWriteCloser: link, aead: aead}
}

func (u *unsealer) Read(p []byte) (int, error) {
	for len(u.plain) == 0 {
		if u.aead == nil {
			return u.ReadWriteCloser.Read(p)
		}
		if err := u.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, u.plain)
	u.plain = u.plain[n:]
	return n, nil
}

// next reads and opens one record.
func (u *unsealer) next() error {
	var hdr [2]byte
	if _, err := io.ReadFull(u.ReadWriteCloser, hdr[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the last record never came
		}
		return fmt.Errorf("%w: sealed part cut short: %w", ErrProtocol, err)
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n < sealTag || n > maxSealed+sealTag {
		return fmt.Errorf("%w: sealed record of %d bytes", ErrProtocol, n)
	}
	if cap(u.rec) < n {
		u.rec = make([]byte, n)
	}
	rec := u.rec[:n]
	if _, err := io.ReadFull(u.ReadWriteCloser, rec); err != nil {
		return fmt.Errorf("%w: sealed record cut short: %w", ErrProtocol, err)
	}
	var nonce [12]byte
	binary.BigEndian.PutUint64(nonce[4:], u.count)
	u.count++
	plain, err := u.aead.Open(rec[:0], nonce[:], rec, nil)
	if err != nil {
		return fmt.Errorf("%w: a sealed record does not open: %w", ErrProtocol, err)
	}
	if len(plain) == 0 {
		u.aead, u.rec = nil, nil // the daemon has the agent's proof: the clear from here
	}
	u.plain = plain
	return nil
}
