package sprites

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// upgrader is the RoundTripper of one proxy link's upgrade. It dials, writes
// the request and reads the response on the caller's goroutine. An
// http.Transport would hand the request to a dial goroutine and then to
// two goroutines per connection, and each handoff wakes a thread during the
// connection's setup; its pool is of no use to a one-shot upgrade either.
// Owning the connection also puts a frameWriter under the WebSocket
// library. A request that goes through a proxy is left to the base
// transport, which knows how to reach it; that link joins no frames.
type upgrader struct {
	base      *http.Transport
	tlsConfig *tls.Config // verification and roots; read-only, never the transport's own
	sessions  tls.ClientSessionCache
	fw        *frameWriter // the upgraded link's connection; nil through a proxy
}

// upgradeClient returns the http.Client for one proxy upgrade, and the
// upgrader under it, whose fw is the link's connection after an upgrade it
// carried itself. A client whose transport is not an *http.Transport is
// used as it is, with no upgrader. sessions, unless the transport's TLS config has its own
// cache, lets the TLS handshake resume an earlier one.
func upgradeClient(base *http.Client, tlsConfig *tls.Config, sessions tls.ClientSessionCache) (*http.Client, *upgrader) {
	bt, ok := base.Transport.(*http.Transport)
	if !ok {
		return base, nil
	}
	u := &upgrader{base: bt, tlsConfig: tlsConfig, sessions: sessions}
	return &http.Client{Transport: u, CheckRedirect: base.CheckRedirect, Jar: base.Jar}, u
}

// maxResponseHeader bounds an upgrade response's header, as
// http.Transport's MaxResponseHeaderBytes does, so that a broken server
// cannot make us buffer without end. A real one sends a few hundred bytes.
const maxResponseHeader = 1 << 20

func (u *upgrader) RoundTrip(req *http.Request) (*http.Response, error) {
	if u.base.Proxy != nil {
		proxy, err := u.base.Proxy(req)
		if err != nil {
			return nil, err
		}
		if proxy != nil {
			return u.base.RoundTrip(req)
		}
	}
	ctx := req.Context()
	conn, err := u.dial(ctx, req.URL)
	if err != nil {
		return nil, err
	}
	// Until the response is read, the request's end must unblock us (a
	// deadline in the past does). Then whoever holds the link or the body
	// closes the connection.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	fw := &frameWriter{Conn: conn}
	header := &io.LimitedReader{R: conn, N: maxResponseHeader}
	br := bufio.NewReader(header)
	var resp *http.Response
	err = req.Write(fw)
	if err == nil {
		resp, err = http.ReadResponse(br, req)
	}
	if !stop() && err == nil {
		err = context.Cause(ctx) // it ended as the response came: the deadline is set
	}
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		header.N = 1<<63 - 1 // the header is in: the body may be longer
		resp.Body = &responseBody{ReadCloser: resp.Body, c: conn}
		return resp, nil
	}
	u.fw = fw
	resp.Body = &upgradedConn{br: br, fw: fw}
	return resp, nil
}

// dial connects to the request's host, with TLS for https. The TLS
// configuration is the transport's, verification included.
func (u *upgrader) dial(ctx context.Context, target *url.URL) (net.Conn, error) {
	dial := u.base.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	addr := canonicalAddr(target)
	raw, err := dial(ctx, "tcp", addr)
	if err != nil || target.Scheme != "https" {
		return raw, err
	}
	cfg := &tls.Config{}
	if u.tlsConfig != nil {
		cfg = u.tlsConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = target.Hostname()
	}
	if cfg.ClientSessionCache == nil {
		cfg.ClientSessionCache = u.sessions
	}
	cfg.NextProtos = []string{"http/1.1"} // a WebSocket upgrade is HTTP/1.1
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// canonicalAddr is u's host:port, with the scheme's port when u has none.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// upgradedConn is the link after a 101: reads drain what the response's
// reader already holds, then go to the connection itself, and the reader
// and its 4 KiB are dropped (coder/websocket buffers reads on its own);
// writes go through the frameWriter.
type upgradedConn struct {
	br *bufio.Reader // nil once drained
	fw *frameWriter
}

func (c *upgradedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.fw.Conn.Read(p)
}

func (c *upgradedConn) Write(p []byte) (int, error) { return c.fw.Write(p) }
func (c *upgradedConn) Close() error                { return c.fw.Close() }

// responseBody is a refused upgrade's body. The connection is not kept:
// one upgrade is all it was for.
type responseBody struct {
	io.ReadCloser
	c net.Conn
}

func (b *responseBody) Close() error {
	b.ReadCloser.Close()
	return b.c.Close()
}
