package spritestest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// link is one live proxy link: a WebSocket on one side, a TCP (or unix)
// connection to the sprite's server on the other.
type link struct {
	ws     *websocket.Conn
	target net.Conn
	once   sync.Once
	// hole: the link carries nothing more either way, and neither end is
	// told (see Server.Blackhole).
	hole atomic.Bool
}

// cut drops the link the way sleep or a network fault does: no close frame.
func (l *link) cut() {
	l.once.Do(func() {
		_ = l.ws.CloseNow()
		_ = l.target.Close()
	})
}

// Close reasons, verbatim from the real server.
const (
	reasonExpectJSON  = "Expected JSON initialization message"
	reasonInvalidJSON = "Invalid JSON in initialization message"
	reasonInvalidPort = "Invalid port number"
	reasonUpstream    = "upstream closed"
)

func (s *Server) handleProxy(w http.ResponseWriter, r *http.Request, sp *sprite) {
	faults := s.currentFaults()
	if waking := s.touch(sp); waking != nil {
		switch faults.ColdProxy {
		case ColdFail:
			http.Error(w, "Process not ready: sprite is waking", http.StatusServiceUnavailable)
			return
		case ColdDrop:
			if ws, err := websocket.Accept(w, r, nil); err == nil {
				_ = ws.CloseNow()
			}
			return
		default:
			t := time.NewTimer(s.opts.MaxWait)
			defer t.Stop()
			select {
			case <-waking:
			case <-t.C:
				http.Error(w, fmt.Sprintf("Process not ready after %s", s.opts.MaxWait), http.StatusServiceUnavailable)
				return
			case <-r.Context().Done():
				return
			case <-s.stop:
				return
			}
		}
	}
	// The request and the 101 each cross the emulated network once.
	if !s.delay(r.Context(), 2*faults.Latency) {
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OnPingReceived: func(context.Context, []byte) bool { sp.pinged.Store(time.Now().UnixNano()); return true },
	})
	if err != nil {
		return
	}
	s.mu.Lock()
	sp.stats.ProxyConnects++
	if s.closed || sp.state != "running" {
		s.mu.Unlock()
		_ = ws.CloseNow()
		return
	}
	// Until it is a link, a sleep or Close cuts it from here: the real
	// server reads the init without a timeout, so nothing else would.
	sp.inits[ws] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(sp.inits, ws) // for every way out before the link is made
		s.mu.Unlock()
	}()
	ws.SetReadLimit(s.opts.MaxMessage)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	host, port, fromQuery, reason, err := s.readInit(ctx, r, ws)
	if reason != "" {
		_ = ws.Close(websocket.StatusUnsupportedData, reason)
		return
	}
	if err != nil {
		_ = ws.CloseNow() // as the real server does after a failed read: no close frame
		return
	}
	s.mu.Lock()
	stall := s.stallInits && !fromQuery
	s.mu.Unlock()
	if stall {
		for err == nil { // until the client or a sleep ends it
			_, _, err = ws.Read(ctx)
		}
		return
	}
	target, err := s.dialTarget(sp, host, port)
	if err != nil {
		_ = ws.Close(websocket.StatusInternalError, "Failed to connect to target: "+err.Error())
		return
	}
	reply, _ := json.Marshal(map[string]string{"status": "connected", "target": rewriteHost(host, port)})
	// An init message and its reply cross the network once each. A target
	// taken from the query costs nothing more: "connected" follows the 101.
	wait := 2 * faults.Latency
	if fromQuery {
		wait = 0
		s.mu.Lock()
		sp.stats.QueryInits++
		s.mu.Unlock()
	}
	if !s.delay(ctx, wait) {
		target.Close()
		ws.CloseNow()
		return
	}
	if err := ws.Write(ctx, websocket.MessageText, reply); err != nil {
		target.Close()
		ws.CloseNow()
		return
	}
	l := &link{ws: ws, target: target}
	s.mu.Lock()
	_, pending := sp.inits[ws] // gone if a sleep or Close cut it meanwhile
	delete(sp.inits, ws)
	if !pending || s.closed || sp.state != "running" {
		s.mu.Unlock()
		l.cut()
		return
	}
	sp.links[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(sp.links, l)
		s.mu.Unlock()
		l.cut()
	}()
	s.relay(ctx, sp, l)
}

// readInit takes the target from the query or from the init message, as
// the real server does: from the query only when host and port are both
// there and non-empty and port starts with an integer ("80abc" is 80; no
// range check, so 0 fails later as a refused dial). Otherwise the first
// message is the init, read without a timeout: a sleep, Close or the
// client going away ends the read. A non-empty reason means the init was
// bad and the link must close with 1003; an error, that the read failed.
func (s *Server) readInit(ctx context.Context, r *http.Request, ws *websocket.Conn) (host string, port int, fromQuery bool, reason string, err error) {
	q := r.URL.Query()
	if host, ps := q.Get("host"), q.Get("port"); host != "" && ps != "" && !s.opts.NoQueryInit {
		if _, err := fmt.Sscanf(ps, "%d", &port); err == nil {
			return host, port, true, "", nil
		}
	}
	host, port, reason, err = s.readInitMessage(ctx, ws)
	return host, port, false, reason, err
}

func (s *Server) readInitMessage(ctx context.Context, ws *websocket.Conn) (string, int, string, error) {
	typ, msg, err := ws.Read(ctx)
	if err != nil {
		return "", 0, "", err
	}
	if typ != websocket.MessageText {
		return "", 0, reasonExpectJSON, nil
	}
	// The real server decodes into an int: a port that is a string or has
	// a fraction is invalid JSON to it, not an invalid port.
	var init struct {
		Host string `json:"host"`
		Port int    `json:"port"`
	}
	if err := json.Unmarshal(msg, &init); err != nil {
		return "", 0, reasonInvalidJSON, nil
	}
	if init.Port < 1 || init.Port > 65535 {
		return "", 0, reasonInvalidPort, nil
	}
	if init.Host == "" {
		init.Host = "localhost"
	}
	return init.Host, init.Port, "", nil
}

func (s *Server) dialTarget(sp *sprite, host string, port int) (net.Conn, error) {
	s.mu.Lock()
	addr, ok := sp.ports[port]
	s.mu.Unlock()
	switch host {
	case "", "localhost", "127.0.0.1", "::1", "10.0.0.1":
	default:
		ok = false
	}
	if !ok && host != "10.0.0.1" && s.execListens(sp, port) {
		// A process started through exec listens there; the sprite's
		// network is this machine's.
		addr, ok = net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), true
		if host == "::1" {
			addr = net.JoinHostPort("::1", strconv.Itoa(port))
		}
	}
	if !ok {
		return nil, fmt.Errorf("dial tcp %s: connect: connection refused", rewriteHost(host, port))
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	if path, isUnix := strings.CutPrefix(addr, "unix:"); isUnix {
		return d.Dial("unix", path)
	}
	return d.Dial("tcp", addr)
}

// rewriteHost reports the target the way the real server does.
func rewriteHost(host string, port int) string {
	switch host {
	case "", "localhost", "127.0.0.1":
		host = "10.0.0.1"
	case "::1":
		host = "fdf::1"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// delay waits d, unless ctx ends or the server stops first.
func (s *Server) delay(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.stop:
		return false
	}
}

// relay copies both ways until either side ends, applying latency to every
// message and counting traffic as sprite activity.
func (s *Server) relay(ctx context.Context, sp *sprite, l *link) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The copies read and write the WebSocket without a context (one that
	// can end costs a context.AfterFunc per message); cutting the link is
	// what ends them.
	defer context.AfterFunc(ctx, l.cut)()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		s.sprite2client(ctx, sp, l)
	}()
	s.client2sprite(ctx, sp, l)
	cancel() // cuts the link, which ends sprite2client
	wg.Wait()
}

func (s *Server) client2sprite(ctx context.Context, sp *sprite, l *link) {
	out := s.delayLine(ctx, func(b []byte) error { _, err := l.target.Write(b); return err })
	defer out.close()
	buf := make([]byte, 32<<10) // reused; the delay line gets copies
	for {
		typ, r, err := l.ws.Reader(context.Background()) // see relay
		if err != nil {
			return
		}
		s.mu.Lock()
		s.touchLocked(sp)
		s.mu.Unlock()
		if typ != websocket.MessageBinary {
			io.Copy(io.Discard, r) // the real server ignores text frames after init
			continue
		}
		for {
			n, rerr := r.Read(buf)
			if n > 0 && l.hole.Load() {
				n = 0
			}
			if n > 0 {
				s.mu.Lock()
				sp.stats.BytesIn += int64(n)
				s.mu.Unlock()
				if !out.send(out.own(buf[:n])) {
					_ = l.ws.Close(websocket.StatusGoingAway, reasonUpstream)
					return
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return
			}
		}
	}
}

func (s *Server) sprite2client(ctx context.Context, sp *sprite, l *link) {
	out := s.delayLine(ctx, func(b []byte) error { return l.ws.Write(context.Background(), websocket.MessageBinary, b) }) // see relay
	defer out.close()
	buf := make([]byte, maxServerMessage) // reused; the delay line gets copies
	for {
		n, err := l.target.Read(buf)
		if l.hole.Load() {
			if err != nil {
				<-ctx.Done() // a dead path carries no close either
				return
			}
			continue
		}
		if n > 0 {
			s.mu.Lock()
			s.touchLocked(sp)
			sp.stats.BytesOut += int64(n)
			s.mu.Unlock()
			if !out.send(out.own(buf[:n])) {
				return
			}
		}
		if err == nil {
			continue
		}
		if !out.flush() {
			return
		}
		if !errors.Is(err, io.EOF) {
			_ = l.ws.Close(websocket.StatusGoingAway, reasonUpstream)
			return
		}
		switch s.currentFaults().TargetEOF {
		case EOFDrop:
			l.cut()
		case EOFClose:
			_ = l.ws.Close(websocket.StatusNormalClosure, "")
		default:
			<-ctx.Done() // keep the link open until the client goes
		}
		return
	}
}

// delayLine delivers messages in order, each one Latency after it was sent.
type delayLine struct {
	write   func([]byte) error
	latency time.Duration
	ch      chan timed
	done    chan struct{}
	failed  chan struct{}
	ctx     context.Context
	s       *Server
}

type timed struct {
	at   time.Time
	data []byte
	ack  chan struct{} // non-nil for a flush marker
}

func (s *Server) delayLine(ctx context.Context, write func([]byte) error) *delayLine {
	d := &delayLine{write: write, latency: s.currentFaults().Latency, ctx: ctx, s: s, failed: make(chan struct{})}
	if d.latency <= 0 {
		return d
	}
	d.ch = make(chan timed, 256)
	d.done = make(chan struct{})
	go d.run()
	return d
}

func (d *delayLine) run() {
	defer close(d.done)
	for m := range d.ch {
		if m.ack != nil {
			close(m.ack)
			continue
		}
		if !d.s.delay(d.ctx, time.Until(m.at)) {
			close(d.failed)
			for range d.ch {
			}
			return
		}
		if err := d.write(m.data); err != nil {
			close(d.failed)
			for range d.ch {
			}
			return
		}
	}
}

// own returns b, or a copy of it when the line holds messages for later
// and the caller's buffer will be reused.
func (d *delayLine) own(b []byte) []byte {
	if d.ch == nil {
		return b
	}
	return bytes.Clone(b)
}

func (d *delayLine) send(b []byte) bool {
	if d.ch == nil {
		return d.write(b) == nil
	}
	select {
	case d.ch <- timed{at: time.Now().Add(d.latency), data: b}:
		return true
	case <-d.failed:
		return false
	}
}

// flush waits until everything sent so far has been written.
func (d *delayLine) flush() bool {
	if d.ch == nil {
		return true
	}
	ack := make(chan struct{})
	select {
	case d.ch <- timed{ack: ack}:
	case <-d.failed:
		return false
	}
	select {
	case <-ack:
		return true
	case <-d.failed:
		return false
	}
}

func (d *delayLine) close() {
	if d.ch != nil {
		close(d.ch)
		<-d.done
	}
}
