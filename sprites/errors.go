package sprites

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Class tells a caller what to do about a failed call.
type Class int

const (
	// Retryable failures are expected while a sprite wakes or the network
	// flaps: a 503, other 5xx, a close before "connected", a dial timeout.
	Retryable Class = iota + 1
	// Permanent failures will not go away by retrying: a rejected token, a
	// sprite that does not exist, an init message the server refuses.
	Permanent
	// Refused means the sprite is up but nothing listens on the target port.
	// Right after a wake that is often temporary, so it is a class of its own.
	Refused
)

func (c Class) String() string {
	switch c {
	case Retryable:
		return "retryable"
	case Permanent:
		return "permanent"
	case Refused:
		return "refused"
	}
	return "unknown"
}

// Sentinel causes, for errors.Is. Every *Error wraps exactly one of them.
var (
	ErrUnauthorized = errors.New("token rejected")
	ErrNotFound     = errors.New("no such sprite")
	ErrBadRequest   = errors.New("request rejected")
	ErrWaking       = errors.New("sprite not ready")
	ErrServer       = errors.New("server error")
	ErrClosedEarly  = errors.New("link closed before connected")
	ErrNetwork      = errors.New("network error")
	ErrTimeout      = errors.New("handshake timed out")
	ErrRefused      = errors.New("nothing listens on the target port")
	ErrProtocol     = errors.New("unexpected reply")
	ErrRateLimited  = errors.New("rate limited")
	ErrTLS          = errors.New("TLS certificate not trusted")
)

// Error is the error type of every call in this package. It names the sprite
// and, for proxy links, the port, and never carries the token.
type Error struct {
	Op     string // "proxy", "get", "list", "create", "delete"
	Sprite string
	Port   int    // 0 when the call has no port
	Class  Class  // what the caller should do
	Status int    // HTTP status of a failed handshake or request, or 0
	Code   int    // WebSocket close code, or 0
	Reason string // server's close reason or error body, trimmed
	Err    error  // one of the sentinels above, possibly wrapping the cause
}

func (e *Error) Error() string {
	where := "sprite " + e.Sprite
	if e.Sprite == "" {
		where = "sprites api"
	}
	if e.Port != 0 {
		where = fmt.Sprintf("%s port %d", where, e.Port)
	}
	msg := fmt.Sprintf("%s: %s: %v", where, e.Op, e.Err)
	switch {
	case e.Status != 0 && e.Reason != "":
		msg += fmt.Sprintf(" (HTTP %d: %s)", e.Status, e.Reason)
	case e.Status != 0:
		msg += fmt.Sprintf(" (HTTP %d)", e.Status)
	case e.Code != 0:
		msg += fmt.Sprintf(" (close %d: %s)", e.Code, e.Reason)
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf reports the class of err, or 0 if err did not come from this
// package (a cancelled context, for instance).
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return 0
}

// IsRetryable reports whether retrying the call may succeed.
func IsRetryable(err error) bool { return ClassOf(err) == Retryable }

// IsPermanent reports whether the call will fail the same way every time.
func IsPermanent(err error) bool { return ClassOf(err) == Permanent }

// IsRefused reports whether the sprite answered but nothing listened on the port.
func IsRefused(err error) bool { return ClassOf(err) == Refused }

// classifyStatus maps the HTTP status of a failed request to a class and cause.
func classifyStatus(status int) (Class, error) {
	switch {
	case status == 401 || status == 403:
		return Permanent, ErrUnauthorized
	case status == 404:
		return Permanent, ErrNotFound
	case status == 429:
		return Retryable, ErrRateLimited
	case status == 503:
		return Retryable, ErrWaking
	case status >= 500:
		return Retryable, ErrServer
	default:
		return Permanent, ErrBadRequest
	}
}

// Close codes the proxy uses: the real server reports every failure after
// the upgrade as a close frame, never as JSON.
const (
	closeNormal         = 1000
	closeGoingAway      = 1001
	closeUnsupported    = 1003
	closeMessageTooBig  = 1009
	closeInternalServer = 1011
)

// classifyClose maps a close frame received before "connected".
func classifyClose(code int) (Class, error) {
	switch code {
	case closeUnsupported, closeMessageTooBig:
		return Permanent, ErrBadRequest
	case closeInternalServer:
		return Refused, ErrRefused
	default:
		return Retryable, ErrClosedEarly
	}
}

// callError classifies a call that got no usable answer: an HTTP error
// response (resp, when its status is not want), or a failure to get one
// (err). Every call in this package goes through it, so that a cancelled
// caller, a refused redirect, an untrusted certificate and a timeout are
// told apart the same way everywhere. ctx is the caller's; hctx bounds the
// call. It returns ctx's error when the caller gave up.
func callError(ctx, hctx context.Context, e Error, resp *http.Response, want int, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if resp != nil && resp.StatusCode != want {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		e.Status, e.Reason = resp.StatusCode, ErrorBody(body)
		e.Class, e.Err = classifyStatus(resp.StatusCode)
		return &e
	}
	switch tlsErr := certError(err); {
	case errors.Is(err, ErrRedirect):
		e.Class, e.Err = Permanent, err
	case tlsErr != nil:
		e.Class, e.Err = Permanent, fmt.Errorf("%w: %v", ErrTLS, tlsErr)
	case hctx.Err() != nil:
		e.Class, e.Err = Retryable, ErrTimeout
	default:
		e.Class, e.Err = Retryable, fmt.Errorf("%w: %v", ErrNetwork, err)
	}
	return &e
}

// certError finds a certificate verification failure in err. Retrying
// cannot fix one, so it is permanent: fail fast and say so.
func certError(err error) error {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &verify):
		return verify
	case errors.As(err, &unknown):
		return unknown
	case errors.As(err, &hostname):
		return hostname
	case errors.As(err, &invalid):
		return invalid
	}
	return nil
}
