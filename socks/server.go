package socks

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/sock"
)

// Errors a Server's Exists and Carry may wrap, so that the client hears
// the matching reply.
var (
	ErrNoSprite = errors.New("no such sprite")
	ErrRefused  = errors.New("nothing listens on the port")
)

// Server answers SOCKS5 and HTTP CONNECT requests on a listener.
type Server struct {
	// Suffix is stripped from destination names: web.sprite is sprite web.
	Suffix string
	// Users, if set, are the accepted usernames and their passwords
	// (RFC 1929; Basic for HTTP CONNECT); a client must then
	// authenticate. Without, no authentication is asked for.
	Users map[string]string
	// Exists says whether a sprite exists; false refuses the request with
	// host unreachable, before any link is tried.
	Exists func(ctx context.Context, sprite string) (bool, error)
	// Carry carries c to port in sprite, as tunnel.Daemon.Carry does.
	Carry func(sprite string, port int, c net.Conn, done func(error)) error
	// Classify maps Carry's error to a reply code; nil means general
	// failure for everything.
	Classify func(error) byte
	Log      zerolog.Logger
}

// handshakeTimeout bounds a client's greeting and request.
const handshakeTimeout = 10 * time.Second

// Serve accepts on ln until it is closed, and returns when every
// handshake it started has finished.
func (s *Server) Serve(ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.ServeConn(c)
		}()
	}
}

// ServeConn reads one client's request and hands its connection over.
func (s *Server) ServeConn(c net.Conn) {
	log := s.Log.With().Str("client", c.RemoteAddr().String()).Logger()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	var sprite string
	var port int
	var replier func(code byte) error
	if first[0] == version5 {
		sprite, port, replier, err = s.socks5(c, br)
	} else {
		sprite, port, replier, err = s.httpConnect(c, br)
	}
	if err != nil {
		log.Debug().Err(err).Msg("proxy request refused")
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	local := &replyConn{Conn: sock.WithoutHalfClose(c), r: br, reply: replier}
	endErr := make(chan error, 1)
	if err := s.Carry(sprite, port, local, func(err error) { endErr <- err }); err != nil {
		log.Debug().Err(err).Str("sprite", sprite).Int("port", port).Msg("proxy connection failed")
		local.fail(s.classify(err))
		return
	}
	if !local.succeed() {
		// It ended before the grant went out: refuse it with the cause.
		local.fail(s.classify(<-endErr))
	}
}

func (s *Server) classify(err error) byte {
	switch {
	case errors.Is(err, ErrNoSprite):
		return ReplyHostUnreachable
	case errors.Is(err, ErrRefused):
		return ReplyConnectionRefused
	case s.Classify != nil:
		return s.Classify(err)
	}
	return ReplyGeneralFailure
}

// check refuses a sprite that does not exist.
func (s *Server) check(sprite string) error {
	if s.Exists == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	ok, err := s.Exists(ctx, sprite)
	if err != nil {
		return &RequestError{s.classify(err), err.Error()}
	}
	if !ok {
		return &RequestError{ReplyHostUnreachable, fmt.Sprintf("sprite %s does not exist", sprite)}
	}
	return nil
}

// socks5 runs the SOCKS5 handshake up to the request. On error the client
// has had its refusal.
func (s *Server) socks5(c net.Conn, br *bufio.Reader) (string, int, func(byte) error, error) {
	methods, err := ReadGreeting(br)
	if err != nil {
		return "", 0, nil, err
	}
	want := byte(methodNone)
	if s.Users != nil {
		want = methodPassword
	}
	if !containsByte(methods, want) {
		c.Write([]byte{version5, methodNoneOK})
		if want == methodPassword {
			return "", 0, nil, errors.New("the client offers no username/password authentication, which this port requires")
		}
		return "", 0, nil, errors.New("the client offers no method this port accepts")
	}
	if _, err := c.Write([]byte{version5, want}); err != nil {
		return "", 0, nil, err
	}
	if want == methodPassword {
		user, pass, err := ReadPassword(br)
		if err != nil {
			return "", 0, nil, err
		}
		if !s.authorized(user, pass) {
			c.Write([]byte{authVersion, 0x01})
			return "", 0, nil, fmt.Errorf("user %q: wrong username or password", user)
		}
		if _, err := c.Write([]byte{authVersion, 0x00}); err != nil {
			return "", 0, nil, err
		}
	}
	req, err := ReadRequest(br)
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			c.Write(reply(ReplyGeneralFailure))
		}
		return "", 0, nil, err
	}
	sprite, err := req.Sprite(s.Suffix)
	if err == nil {
		err = s.check(sprite)
	}
	var re *RequestError
	if errors.As(err, &re) {
		c.Write(reply(re.Reply))
		return "", 0, nil, err
	}
	return sprite, req.Port, func(code byte) error {
		_, err := c.Write(reply(code))
		return err
	}, nil
}

// httpConnect serves an HTTP proxy's CONNECT sprite:port on the same port,
// for tools that speak only HTTP proxies.
func (s *Server) httpConnect(c net.Conn, br *bufio.Reader) (string, int, func(byte) error, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return "", 0, nil, fmt.Errorf("neither SOCKS5 nor HTTP: %w", err)
	}
	if req.Body != nil {
		req.Body.Close()
	}
	refuse := func(code int, msg string) error {
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\n", code, http.StatusText(code))
		if code == http.StatusProxyAuthRequired {
			fmt.Fprint(c, "Proxy-Authenticate: Basic realm=\"spritefwd\"\r\n")
		}
		fmt.Fprintf(c, "Content-Length: %d\r\n\r\n%s\n", len(msg)+1, msg)
		return errors.New(msg)
	}
	if req.Method != http.MethodConnect {
		return "", 0, nil, refuse(http.StatusMethodNotAllowed, "only CONNECT is supported: this is a SOCKS5 and HTTP CONNECT proxy to sprites")
	}
	if s.Users != nil {
		user, pass, ok := basicAuth(req.Header.Get("Proxy-Authorization"))
		if !ok || !s.authorized(user, pass) {
			return "", 0, nil, refuse(http.StatusProxyAuthRequired, "wrong or missing proxy username and password")
		}
	}
	host, p, err := net.SplitHostPort(req.Host)
	n, perr := strconv.Atoi(p)
	if err != nil || perr != nil || n < 0 || n > 65535 {
		return "", 0, nil, refuse(http.StatusBadRequest, fmt.Sprintf("CONNECT %q: want sprite:port", req.Host))
	}
	r := Request{Command: cmdConnect, Host: host, Port: n, IsIP: net.ParseIP(host) != nil, Domain: net.ParseIP(host) == nil}
	sprite, err := r.Sprite(s.Suffix)
	if err == nil {
		err = s.check(sprite)
	}
	var re *RequestError
	if errors.As(err, &re) {
		return "", 0, nil, refuse(httpStatus(re.Reply), re.Msg)
	}
	return sprite, n, func(code byte) error {
		if code == ReplySucceeded {
			_, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
			return err
		}
		return refuse(httpStatus(code), "could not connect: "+replyText(code))
	}, nil
}

func httpStatus(code byte) int {
	switch code {
	case ReplyHostUnreachable:
		return http.StatusNotFound
	case ReplyNotAllowed, ReplyAddressUnsupported:
		return http.StatusForbidden
	case ReplyCommandUnsupported:
		return http.StatusMethodNotAllowed
	}
	return http.StatusBadGateway
}

func replyText(code byte) string {
	switch code {
	case ReplyHostUnreachable:
		return "no such sprite"
	case ReplyConnectionRefused:
		return "nothing listens on the port"
	}
	return "connection failed"
}

func (s *Server) authorized(user, pass string) bool {
	want, ok := s.Users[user]
	// Compared in constant time, and compared even for an unknown user.
	match := subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
	return ok && match
}

func basicAuth(h string) (user, pass string, ok bool) {
	const prefix = "Basic "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", "", false
	}
	b, err := base64.StdEncoding.DecodeString(h[len(prefix):])
	if err != nil {
		return "", "", false
	}
	user, pass, ok = strings.Cut(string(b), ":")
	return user, pass, ok
}

func containsByte(b []byte, x byte) bool {
	for _, c := range b {
		if c == x {
			return true
		}
	}
	return false
}

// replyConn is the client's connection as the carrier sees it: the reply
// that grants the request goes out before the first byte from the sprite,
// and a connection that fails before it gets a refusal instead, with the
// reason's reply code.
type replyConn struct {
	sock.Conn
	r     io.Reader // the handshake's reader, which may hold the client's first bytes
	reply func(code byte) error

	mu      sync.Mutex
	replied bool
	failed  bool // closed before the reply: the server replies with the cause
}

func (c *replyConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// grant sends the success reply unless a reply went out already.
func (c *replyConn) grant() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.replied || c.failed {
		return nil
	}
	c.replied = true
	return c.reply(ReplySucceeded)
}

func (c *replyConn) Write(p []byte) (int, error) {
	if err := c.grant(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *replyConn) CloseWrite() error {
	if err := c.grant(); err != nil {
		return err
	}
	return c.Conn.CloseWrite()
}

// SetLinger and Close before the reply leave the refusal to the server.
func (c *replyConn) SetLinger(sec int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.replied {
		return nil
	}
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

func (c *replyConn) Close() error {
	c.mu.Lock()
	if !c.replied {
		c.failed = true
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// succeed grants the request once the sprite's side is open. It reports
// false if the connection closed before that.
func (c *replyConn) succeed() bool {
	c.mu.Lock()
	failed := c.failed && !c.replied
	c.mu.Unlock()
	if failed {
		return false
	}
	if err := c.grant(); err != nil {
		sock.Reset(c.Conn)
	}
	return true
}

// fail refuses the request with code and closes the connection.
func (c *replyConn) fail(code byte) {
	c.mu.Lock()
	replied := c.replied
	c.replied, c.failed = true, true
	c.mu.Unlock()
	if !replied {
		_ = c.reply(code)
		_ = c.Conn.Close()
		return
	}
	sock.Reset(c.Conn)
}
