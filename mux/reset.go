package mux

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// ResetCode says why a stream was reset: the a field of a reset frame. A
// daemon acts on the code; the reason beside it is text for people.
type ResetCode uint64

const (
	ResetError       ResetCode = 0 // anything not below; the reason says what
	ResetNotSeen     ResetCode = 1 // no open frame ever arrived for this stream
	ResetRefused     ResetCode = 2 // nothing listens on the target's port
	ResetUnreachable ResetCode = 3 // the target did not answer, or has no route or address
	ResetNotAllowed  ResetCode = 4 // the agent does not carry streams to that host
)

func (c ResetCode) String() string {
	switch c {
	case ResetError:
		return "error"
	case ResetNotSeen:
		return "not seen"
	case ResetRefused:
		return "refused"
	case ResetUnreachable:
		return "unreachable"
	case ResetNotAllowed:
		return "not allowed"
	}
	return fmt.Sprintf("code %d", uint64(c))
}

// ErrNotAllowed marks a target the agent's policy refuses; a Server's Dial
// wraps it so that the daemon hears ResetNotAllowed.
var ErrNotAllowed = errors.New("target not allowed")

// PeerResetError is a stream the peer reset: errors.Is(err, ErrPeerReset).
type PeerResetError struct {
	Code   ResetCode
	Reason string
}

func (e *PeerResetError) Error() string { return fmt.Sprintf("%s: %s", ErrPeerReset, e.Reason) }
func (e *PeerResetError) Unwrap() error { return ErrPeerReset }

// ResetCodeOf returns the code a peer reset err with, and false if err is
// not a peer's reset.
func ResetCodeOf(err error) (ResetCode, bool) {
	var pr *PeerResetError
	if errors.As(err, &pr) {
		return pr.Code, true
	}
	return 0, false
}

// DialResetCode is the code that tells the daemon why a target could not
// be dialled.
func DialResetCode(err error) ResetCode {
	var ne interface{ Timeout() bool }
	switch {
	case errors.Is(err, ErrNotAllowed):
		return ResetNotAllowed
	case errors.Is(err, syscall.ECONNREFUSED):
		return ResetRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout(),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return ResetUnreachable
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return ResetUnreachable
	}
	return ResetError
}
