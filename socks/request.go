// Package socks is spritefwd's SOCKS5 front (RFC 1928, CONNECT only, with
// RFC 1929 username/password authentication when asked for), and HTTP
// CONNECT on the same port: it reads which sprite and port a client wants,
// the destination's domain name being the sprite's name, and hands the
// connection to whoever carries it.
package socks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Protocol constants of RFC 1928 and RFC 1929.
const (
	version5    = 0x05
	authVersion = 0x01 // of the username/password subnegotiation

	methodNone     = 0x00
	methodPassword = 0x02
	methodNoneOK   = 0xFF // no acceptable method

	cmdConnect = 0x01

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04
)

// Reply codes (RFC 1928, section 6).
const (
	ReplySucceeded          byte = 0x00
	ReplyGeneralFailure     byte = 0x01
	ReplyNotAllowed         byte = 0x02
	ReplyNetworkUnreachable byte = 0x03
	ReplyHostUnreachable    byte = 0x04
	ReplyConnectionRefused  byte = 0x05
	ReplyTTLExpired         byte = 0x06
	ReplyCommandUnsupported byte = 0x07
	ReplyAddressUnsupported byte = 0x08
)

// Request is a client's SOCKS5 request.
type Request struct {
	Command byte
	// Host is the destination: a domain name as sent, or an IP address
	// in text for the IPv4 and IPv6 address types.
	Host   string
	IsIP   bool
	Port   int
	Domain bool // the client sent a domain name (ATYP 3)
}

// RequestError is a request that cannot be served, with the reply code
// that tells the client why.
type RequestError struct {
	Reply byte
	Msg   string
}

func (e *RequestError) Error() string { return e.Msg }

// ErrProtocol is a client that does not speak SOCKS5 as RFC 1928 has it.
var ErrProtocol = errors.New("not a SOCKS5 request")

// ReadGreeting reads the client's version and method list.
func ReadGreeting(r io.Reader) (methods []byte, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != version5 {
		return nil, fmt.Errorf("%w: version %d", ErrProtocol, hdr[0])
	}
	if hdr[1] == 0 {
		return nil, fmt.Errorf("%w: no authentication methods", ErrProtocol)
	}
	methods = make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return nil, err
	}
	return methods, nil
}

// ReadPassword reads an RFC 1929 username/password request.
func ReadPassword(r io.Reader) (user, pass string, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", "", err
	}
	if hdr[0] != authVersion {
		return "", "", fmt.Errorf("%w: username/password version %d", ErrProtocol, hdr[0])
	}
	u := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, u); err != nil {
		return "", "", err
	}
	var plen [1]byte
	if _, err := io.ReadFull(r, plen[:]); err != nil {
		return "", "", err
	}
	p := make([]byte, plen[0])
	if _, err := io.ReadFull(r, p); err != nil {
		return "", "", err
	}
	return string(u), string(p), nil
}

// ReadRequest reads a SOCKS5 request. A malformed one is ErrProtocol; one
// that is well formed is returned whatever it asks, for the caller to
// refuse with the right reply.
func ReadRequest(r io.Reader) (Request, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Request{}, err
	}
	if hdr[0] != version5 || hdr[2] != 0 {
		return Request{}, fmt.Errorf("%w: request header % x", ErrProtocol, hdr)
	}
	req := Request{Command: hdr[1]}
	switch hdr[3] {
	case atypIPv4, atypIPv6:
		n := 4
		if hdr[3] == atypIPv6 {
			n = 16
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return Request{}, err
		}
		req.Host, req.IsIP = ipString(b), true
	case atypDomain:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return Request{}, err
		}
		if l[0] == 0 {
			return Request{}, fmt.Errorf("%w: empty domain name", ErrProtocol)
		}
		b := make([]byte, l[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return Request{}, err
		}
		req.Host, req.Domain = string(b), true
	default:
		return Request{}, fmt.Errorf("%w: address type %d", ErrProtocol, hdr[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return Request{}, err
	}
	req.Port = int(binary.BigEndian.Uint16(port[:]))
	return req, nil
}

func ipString(b []byte) string {
	if len(b) == 4 {
		return fmt.Sprintf("%d.%d.%d.%d", b[0], b[1], b[2], b[3])
	}
	var parts []string
	for i := 0; i < 16; i += 2 {
		parts = append(parts, fmt.Sprintf("%x", binary.BigEndian.Uint16(b[i:])))
	}
	return strings.Join(parts, ":")
}

// Sprite checks a request against what the SOCKS front serves: CONNECT to
// a domain name that, with suffix stripped, is a sprite name, on a port
// 1-65535. It returns the sprite, or the RequestError to refuse it with.
func (r Request) Sprite(suffix string) (string, error) {
	switch {
	case r.Command != cmdConnect:
		return "", &RequestError{ReplyCommandUnsupported, fmt.Sprintf("command %d: only CONNECT is supported", r.Command)}
	case r.IsIP:
		// The destination names the sprite; an address names nothing
		// here. Clients then retry with the name (curl: --socks5-hostname).
		return "", &RequestError{ReplyAddressUnsupported, fmt.Sprintf("%s is an IP address; ask for the sprite by name (curl --socks5-hostname, socks5h://)", r.Host)}
	case r.Port < 1:
		return "", &RequestError{ReplyNotAllowed, "port 0"}
	}
	name := strings.ToLower(strings.TrimSuffix(r.Host, "."))
	if suffix != "" {
		name = strings.TrimSuffix(name, strings.ToLower(suffix))
	}
	if !validSprite(name) {
		return "", &RequestError{ReplyHostUnreachable, fmt.Sprintf("%q is not a sprite name", r.Host)}
	}
	return name, nil
}

// validSprite is a sprite name as the API has them: lowercase letters, '_',
// digits and '-', not starting or ending with '-'; a name with a dot is a
// domain, not a sprite.
func validSprite(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// reply is a SOCKS5 reply with an all-zero bound address: the client
// cannot use the daemon's address for anything.
func reply(code byte) []byte {
	return []byte{version5, code, 0, atypIPv4, 0, 0, 0, 0, 0, 0}
}
