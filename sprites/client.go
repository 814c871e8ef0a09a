// Package sprites is a small client for the Sprites.dev API: proxy links into
// a sprite's TCP ports, and the sprite calls the daemon needs (get, list,
// create, delete). Every failure is an *Error with a Class, so that callers
// can tell a sprite that is waking from a token that will never work.
package sprites

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// DefaultAPIURL is the public Sprites API.
const DefaultAPIURL = "https://api.sprites.dev"

// Defaults for Options. The handshake timeout is long because the real
// server holds the upgrade for up to 30 s while a cold sprite wakes.
const (
	DefaultHandshakeTimeout = 60 * time.Second
	DefaultMaxMessage       = 32 << 10
	DefaultRequestTimeout   = 30 * time.Second
)

// Options configures a Client. Only Token is required.
type Options struct {
	APIURL           string        // default DefaultAPIURL; http:// means ws:// (for the emulator)
	Token            string        // sent as a Bearer token, never logged
	UserAgent        string        // default "spritefwd"
	HandshakeTimeout time.Duration // bounds the upgrade plus the init exchange
	RequestTimeout   time.Duration // bounds REST calls
	// MaxMessage is the largest message sent on a link once the sprite is
	// known to accept it; see SafeMessage for the size sent until then.
	MaxMessage int
	// LimitRecheck is how long a refused message size stands before it is
	// probed again; default DefaultLimitRecheck.
	LimitRecheck time.Duration
	// OnMessageLimit, if set, is told what each probe or refusal taught.
	OnMessageLimit func(LimitEvent)
	// Now is the clock for the limit's recheck; default time.Now.
	Now func() time.Time
	// HTTPClient lets tests inject a transport. TLS is always verified: there
	// is deliberately no option to skip verification.
	HTTPClient *http.Client
	// RootCAs, if set, replaces the system's roots for the API's certificate,
	// for an emulator or a proxy with a private CA. It applies to HTTPClient's
	// transport too, when that is an *http.Transport.
	RootCAs *x509.CertPool
}

// Client talks to one Sprites API endpoint with one token. It is safe for
// concurrent use and keeps one http.Client, so connections are reused.
type Client struct {
	base       *url.URL
	token      string
	userAgent  string
	handshake  time.Duration
	request    time.Duration
	maxMessage int
	http       *http.Client
	// tlsSessions lets each proxy link's TLS handshake resume an earlier
	// one: every direct-mode connection is a new TLS connection to the API.
	tlsSessions tls.ClientSessionCache
	upgradeTLS  *tls.Config // the transport's TLS config as New found it; nil for the defaults

	recheck    time.Duration
	onLimit    func(LimitEvent)
	now        func() time.Time
	probeCtx   context.Context // ends probes on Close
	stopProbes context.CancelFunc
	probes     sync.WaitGroup
	limitsMu   sync.Mutex
	limits     map[string]*msgLimit
	closed     bool

	// writePOST: this endpoint answered fs/write's PUT with 405, so files
	// are written with POST, as the API reference has it.
	writePOST atomic.Bool
}

// New validates opts and returns a Client.
func New(opts Options) (*Client, error) {
	raw := opts.APIURL
	if raw == "" {
		raw = DefaultAPIURL
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("api_url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("api_url %q: scheme must be https (or http for a local emulator)", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("api_url %q: no host", raw)
	}
	if opts.Token == "" {
		return nil, errors.New("no token: set SPRITES_TOKEN or token_file")
	}
	if strings.ContainsAny(opts.Token, "\r\n") {
		return nil, errors.New("token contains a line break; check token_file")
	}
	c := &Client{
		base:        u,
		token:       opts.Token,
		userAgent:   opts.UserAgent,
		handshake:   opts.HandshakeTimeout,
		request:     opts.RequestTimeout,
		maxMessage:  opts.MaxMessage,
		http:        opts.HTTPClient,
		tlsSessions: tls.NewLRUClientSessionCache(64),
		recheck:     opts.LimitRecheck,
		onLimit:     opts.OnMessageLimit,
		now:         opts.Now,
		limits:      map[string]*msgLimit{},
	}
	c.probeCtx, c.stopProbes = context.WithCancel(context.Background())
	if c.recheck <= 0 {
		c.recheck = DefaultLimitRecheck
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.userAgent == "" {
		c.userAgent = "spritefwd"
	}
	if c.handshake <= 0 {
		c.handshake = DefaultHandshakeTimeout
	}
	if c.request <= 0 {
		c.request = DefaultRequestTimeout
	}
	if c.maxMessage <= 0 {
		c.maxMessage = DefaultMaxMessage
	}
	if c.http == nil {
		c.http = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if opts.RootCAs != nil {
		if err := c.trust(opts.RootCAs); err != nil {
			return nil, err
		}
	}
	// A copy, so that a caller's client keeps its own policy.
	hc := *c.http
	hc.CheckRedirect = sameOrigin(hc.CheckRedirect)
	c.http = &hc
	// The upgrader's TLS dial takes its config from here, never from the
	// transport later: http.Transport writes its TLSClientConfig (to add
	// h2) on its first request, which may run beside an upgrade.
	if tr, ok := c.http.Transport.(*http.Transport); ok && tr.TLSClientConfig != nil {
		c.upgradeTLS = tr.TLSClientConfig.Clone()
	}
	return c, nil
}

// trust puts pool in a copy of the client's transport's TLS config, where
// both REST calls and the upgrader's own TLS dial (upgrade.go) read it.
func (c *Client) trust(pool *x509.CertPool) error {
	tr, ok := c.http.Transport.(*http.Transport)
	if !ok {
		return errors.New("RootCAs needs an HTTPClient whose Transport is an *http.Transport")
	}
	tr = tr.Clone()
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{}
	}
	tr.TLSClientConfig.RootCAs = pool
	hc := *c.http
	hc.Transport = tr
	c.http = &hc
	return nil
}

// ErrRedirect means the API redirected to another scheme or host, which
// the client refuses to follow, as the token would go along.
var ErrRedirect = errors.New("redirect to another scheme or host refused")

// sameOrigin is a CheckRedirect that refuses to leave the first request's
// scheme, host and port, and then applies next (or Go's limit of 10).
// net/http alone drops Authorization only when the host name changes to
// one that is not a subdomain of it (go1.26): it keeps the token on a
// redirect from https to http, to another port on the same host, or to a
// subdomain. Every request carries the token, so none of those may happen.
func sameOrigin(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if from, to := origin(via[0].URL), origin(req.URL); from != to {
			return fmt.Errorf("%w: %s sent a redirect to %s; the token goes only to api_url: set api_url to the server meant", ErrRedirect, from, to)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
}

// origin is scheme://host:port, with the scheme's port made explicit.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// APIURL returns the base URL the client talks to.
func (c *Client) APIURL() string { return c.base.String() }

func (c *Client) endpoint(ws bool, elem ...string) string {
	u := *c.base
	if ws {
		if u.Scheme == "https" {
			u.Scheme = "wss"
		} else {
			u.Scheme = "ws"
		}
	}
	p := strings.TrimSuffix(u.Path, "/")
	for _, e := range elem {
		p += "/" + url.PathEscape(e)
	}
	u.Path = p
	u.RawPath = ""
	return u.String()
}

func (c *Client) header() http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+c.token)
	h.Set("User-Agent", c.userAgent)
	return h
}

// initMessage is the first message on a proxy link.
type initMessage struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

// InitResponse is the server's reply to the init message.
type InitResponse struct {
	Status string `json:"status"`
	Target string `json:"target"`
}

// ParseInitResponse checks the server's first message on a proxy link. It
// accepts only {"status":"connected",...}; anything else is an error that
// quotes (a bounded prefix of) what the server sent.
func ParseInitResponse(msg []byte) (InitResponse, error) {
	var r InitResponse
	if err := json.Unmarshal(msg, &r); err != nil {
		return r, fmt.Errorf("%w: not JSON: %q", ErrProtocol, clip(msg))
	}
	if r.Status != "connected" {
		return r, fmt.Errorf("%w: status %q, want \"connected\"", ErrProtocol, clip([]byte(r.Status)))
	}
	return r, nil
}

// clip bounds server-provided text that ends up in error messages and logs.
func clip(b []byte) string {
	const max = 200
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut-- // never split a character: the result must stay valid UTF-8
		}
		s = s[:cut] + "…"
	}
	return strings.TrimSpace(s)
}

// Dial opens a proxy link to host:port inside sprite. It returns once the
// server has said "connected"; the Link then carries raw TCP bytes.
// The handshake is bounded by Options.HandshakeTimeout and by ctx; the
// returned Link lives until it is closed, independent of ctx.
func (c *Client) Dial(ctx context.Context, sprite, host string, port int) (*Link, error) {
	fail := func(class Class, cause error, status, code int, reason string) error {
		return &Error{Op: "proxy", Sprite: sprite, Port: port, Class: class, Status: status, Code: code, Reason: reason, Err: cause}
	}
	hctx, cancel := context.WithTimeout(ctx, c.handshake)
	defer cancel()

	// The target goes in the query too, so that a server that takes it from
	// there connects during the upgrade and says "connected" right after
	// the 101: a round trip less than waiting for the init message. The
	// init message is still sent, for a server that expects it; one that
	// used the query ignores text frames after init.
	target := url.Values{"host": {host}, "port": {strconv.Itoa(port)}}
	var pongs atomic.Pointer[Link] // set once connected; a pong may come first
	ws, up, err := c.upgrade(ctx, hctx, sprite, port, target.Encode(), func() {
		if l := pongs.Load(); l != nil {
			l.touch()
		}
	})
	if err != nil {
		return nil, err
	}
	// From here on, any failure must not leak ws.
	ok := false
	defer func() {
		if !ok {
			ws.CloseNow()
		}
	}()
	init, _ := json.Marshal(initMessage{Host: host, Port: port})
	if err := ws.Write(hctx, websocket.MessageText, init); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.closeErr(fail, hctx, err)
	}
	typ, msg, err := ws.Read(hctx)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r, err := c.initReply(fail, hctx, typ, msg, err)
	if err != nil {
		return nil, err
	}
	ok = true
	var fw *frameWriter
	if up != nil && up.fw != nil {
		fw = up.fw
		fw.armed = true // from here on only frames go by, at a boundary now
	}
	// Our side accepts messages of any size: the server sends at most 32 KiB,
	// but nothing is gained by failing a link over a larger one.
	ws.SetReadLimit(-1)
	limit := c.limitFor(sprite)
	// Probe once a link is up: the sprite is awake and the token good, so
	// the probe is answered at once, and a failed dial costs no second call.
	c.maybeProbe(sprite, limit)
	l := newLink(ws, c, sprite, limit, fw)
	l.target.Store(&r.Target)
	pongs.Store(l)
	return l, nil
}

// initReply judges the first message after the init: "connected", or the
// close that says why not. fail makes the *Error; hctx bounded the wait.
func (c *Client) initReply(fail func(Class, error, int, int, string) error, hctx context.Context, typ websocket.MessageType, msg []byte, err error) (InitResponse, error) {
	if err != nil {
		return InitResponse{}, c.closeErr(fail, hctx, err)
	}
	if typ != websocket.MessageText {
		return InitResponse{}, fail(Permanent, fmt.Errorf("%w: binary message before connected", ErrProtocol), 0, 0, "")
	}
	r, err := ParseInitResponse(msg)
	if err != nil {
		return InitResponse{}, fail(Permanent, err, 0, 0, "")
	}
	return r, nil
}

// upgrade opens a proxy WebSocket to sprite with the given query. ctx is
// the caller's, hctx bounds the handshake. A failure is an *Error, or
// ctx's error when the caller gave up.
func (c *Client) upgrade(ctx, hctx context.Context, sprite string, port int, query string, onPong func()) (*websocket.Conn, *upgrader, error) {
	u := c.endpoint(true, "v1", "sprites", sprite, "proxy")
	if query != "" {
		u += "?" + query
	}
	hc, up := upgradeClient(c.http, c.upgradeTLS, c.tlsSessions)
	opts := &websocket.DialOptions{HTTPClient: hc, HTTPHeader: c.header()}
	if onPong != nil {
		opts.OnPongReceived = func(context.Context, []byte) { onPong() }
	}
	ws, resp, err := websocket.Dial(hctx, u, opts)
	if err != nil {
		return nil, nil, callError(ctx, hctx, Error{Op: "proxy", Sprite: sprite, Port: port}, resp, http.StatusSwitchingProtocols, err)
	}
	return ws, up, nil
}

// closeErr classifies a failure while waiting for "connected".
func (c *Client) closeErr(fail func(Class, error, int, int, string) error, hctx context.Context, err error) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		class, cause := classifyClose(int(ce.Code))
		return fail(class, cause, 0, int(ce.Code), clip([]byte(ce.Reason)))
	}
	if hctx.Err() != nil {
		return fail(Retryable, ErrTimeout, 0, 0, "")
	}
	return fail(Retryable, fmt.Errorf("%w: %v", ErrClosedEarly, err), 0, 0, "")
}

// ErrorBody extracts a readable message from an API error body: the
// "message" or "error" of a JSON body, or the trimmed text of any other.
func ErrorBody(body []byte) string {
	var j struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &j) == nil {
		switch {
		case j.Message != "" && j.Error != "":
			return clip([]byte(j.Error + ": " + j.Message))
		case j.Message != "":
			return clip([]byte(j.Message))
		case j.Error != "":
			return clip([]byte(j.Error))
		}
	}
	return clip(body)
}

// Sprite is the API's view of one sprite.
type Sprite struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Status       string    `json:"status"` // cold, warm or running
	URL          string    `json:"url,omitempty"`
	Organization string    `json:"organization,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at,omitempty"`
}

// Get returns a sprite's status. Like every API call it wakes the sprite.
func (c *Client) Get(ctx context.Context, name string) (Sprite, error) {
	var s Sprite
	err := c.do(ctx, "get", name, http.MethodGet, nil, &s, "v1", "sprites", name)
	return s, err
}

// List returns the sprites the token can see whose names start with
// prefix ("" for all). It follows the API's pages (has_more and
// next_continuation_token, as the official SDK does): a first page alone
// would hide the sprites of a large organization.
func (c *Client) List(ctx context.Context, prefix string) ([]Sprite, error) {
	var all []Sprite
	seen := map[string]bool{}
	token := ""
	for range maxListPages {
		q := url.Values{"max_results": {strconv.Itoa(listPageSize)}}
		if prefix != "" {
			q.Set("prefix", prefix)
		}
		if token != "" {
			q.Set("continuation_token", token)
		}
		var page struct {
			Sprites []Sprite `json:"sprites"`
			HasMore bool     `json:"has_more"`
			Next    string   `json:"next_continuation_token"`
		}
		if err := c.doURL(ctx, "list", "", http.MethodGet, c.endpoint(false, "v1", "sprites")+"?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Sprites...)
		if !page.HasMore || page.Next == "" {
			return all, nil
		}
		if seen[page.Next] {
			return nil, &Error{Op: "list", Class: Permanent, Err: fmt.Errorf("%w: the same continuation token came back twice (%s)", ErrProtocol, clip([]byte(page.Next)))}
		}
		seen[page.Next] = true
		token = page.Next
	}
	return nil, &Error{Op: "list", Class: Permanent, Err: fmt.Errorf("%w: more than %d pages of sprites", ErrProtocol, maxListPages)}
}

// Create creates a sprite.
func (c *Client) Create(ctx context.Context, name string) (Sprite, error) {
	var s Sprite
	err := c.do(ctx, "create", name, http.MethodPost, map[string]string{"name": name}, &s, "v1", "sprites")
	return s, err
}

// Delete destroys a sprite.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.do(ctx, "delete", name, http.MethodDelete, nil, nil, "v1", "sprites", name)
}

// Pages of the list of sprites: the official SDK's page size, and a
// bound that only an API handing out pages without end reaches.
const (
	listPageSize = 100
	maxListPages = 1000
)

func (c *Client) do(ctx context.Context, op, sprite, method string, in, out any, elem ...string) error {
	return c.doURL(ctx, op, sprite, method, c.endpoint(false, elem...), in, out)
}

func (c *Client) doURL(ctx context.Context, op, sprite, method, target string, in, out any) error {
	fail := func(class Class, cause error, status int, reason string) error {
		return &Error{Op: op, Sprite: sprite, Class: class, Status: status, Reason: reason, Err: cause}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.request)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fail(Permanent, err, 0, "")
	}
	req.Header = c.header()
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return callError(parent, ctx, Error{Op: op, Sprite: sprite}, nil, 0, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return callError(parent, ctx, Error{Op: op, Sprite: sprite}, resp, http.StatusOK, nil)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fail(Retryable, fmt.Errorf("%w: reading response: %v", ErrNetwork, err), resp.StatusCode, "")
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fail(Permanent, fmt.Errorf("%w: %v", ErrProtocol, err), resp.StatusCode, clip(data))
	}
	return nil
}

// Close ends message-size probes and releases idle HTTP connections.
// Open links are not affected.
func (c *Client) Close() {
	c.limitsMu.Lock()
	c.closed = true
	c.limitsMu.Unlock()
	c.stopProbes()
	c.probes.Wait()
	c.http.CloseIdleConnections()
}
