// Package agent is the server that spritefwd runs inside a sprite in mux
// mode. It accepts sessions from the daemon over proxy links, checks the
// deployment secret, and carries each stream to a target inside the sprite:
// loopback only, unless the deployment allows more.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/backoff"
	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/sock"
)

// Options configure an agent.
type Options struct {
	Secret string
	// AllowHosts are targets allowed besides loopback, by name or IP.
	AllowHosts []string
	// ProcNet is the directory of the sprite's tcp and tcp6 tables;
	// DefaultProcNet if empty.
	ProcNet string
	Log     zerolog.Logger
}

// ErrTargetRefused is a stream's target that policy does not allow.
var ErrTargetRefused = fmt.Errorf("%w: the agent reaches loopback only", mux.ErrNotAllowed)

// Agent serves mux sessions on a listener.
type Agent struct {
	opts Options
	srv  *mux.Server
}

// New returns an agent; Serve runs it.
func New(opts Options) (*Agent, error) {
	if len(opts.Secret) < 32 {
		return nil, errors.New("agent: the secret must be at least 32 characters")
	}
	a := &Agent{opts: opts}
	a.srv = &mux.Server{Secret: opts.Secret, Log: opts.Log, Dial: a.dial, Ports: a.watchPorts}
	return a, nil
}

// Serve accepts links on ln until ctx is done, then resets every stream.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer func() {
		ln.Close()
		a.srv.Close()
		wg.Wait()
	}()
	for failures := 0; ; {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and friends: back off rather than spin.
			a.opts.Log.Warn().Err(err).Msg("accept failed")
			select {
			case <-ctx.Done():
			case <-time.After(acceptRetry.Delay(failures)):
			}
			failures++
			continue
		}
		failures = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.srv.ServeConn(c); err != nil {
				a.opts.Log.Warn().Err(err).Str("from", c.RemoteAddr().String()).Msg("session refused or failed")
			}
		}()
	}
}

// Allowed checks a target host against the policy before any lookup.
func (a *Agent) Allowed(host string) error {
	if host == "localhost" || slices.Contains(a.opts.AllowHosts, host) {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w (asked for %s); allow it with --allow-host", ErrTargetRefused, host)
}

// dial connects to a target. The address actually dialled is checked again
// at connect time, so a name that resolves somewhere else is refused too.
func (a *Agent) dial(ctx context.Context, host string, port int) (sock.Conn, error) {
	if err := a.Allowed(host); err != nil {
		return nil, err
	}
	d := net.Dialer{Control: func(_, address string, _ syscall.RawConn) error {
		h, _, _ := net.SplitHostPort(address)
		if ip := net.ParseIP(h); ip != nil && !ip.IsLoopback() && !slices.Contains(a.opts.AllowHosts, host) {
			return fmt.Errorf("%w (%s resolved to %s)", ErrTargetRefused, host, h)
		}
		return nil
	}}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// ReadSecret reads the deployment secret from a file ("-" for stdin),
// which must not be readable by others.
func ReadSecret(path string, stdin io.Reader) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, 4096))
	} else {
		var fi os.FileInfo
		if fi, err = os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("secret file %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// ListenRetry listens on addr, retrying for up to wait while the port is
// still held by an agent that is exiting.
func ListenRetry(ctx context.Context, addr string, wait time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(wait)
	for attempt := 0; ; attempt++ {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(acceptRetry.Delay(attempt)):
		}
	}
}

// acceptRetry spaces failed accepts, and listens on a port that an exiting
// agent still holds.
var acceptRetry = backoff.Policy{Min: 20 * time.Millisecond, Max: time.Second, Jitter: 0.3}
