package spritestest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

// dialProxy opens a proxy WebSocket to box with the given query.
func dialProxy(t *testing.T, s *Server, q url.Values) *websocket.Conn {
	t.Helper()
	u := strings.Replace(s.URL, "http://", "ws://", 1) + "/v1/sprites/box/proxy"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	ws, _, err := websocket.Dial(context.Background(), u, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + testToken}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws
}

// TestProxyTarget: the target comes from the query only when host and port
// are both there and non-empty, with the port read as the real server
// reads it; otherwise from the init message, checked as it checks it.
func TestProxyTarget(t *testing.T) {
	const initMsg = `{"host":"localhost","port":5432}`
	for _, tt := range []struct {
		name      string
		q         url.Values
		init      string // sent as text, unless binary; "" sends nothing
		binary    bool
		target    string // in "connected"; "" when the link is refused
		fromQuery bool
		code      websocket.StatusCode
		reason    string
	}{
		{name: "host and port in the query", q: url.Values{"host": {"localhost"}, "port": {"5432"}}, target: "10.0.0.1:5432", fromQuery: true},
		{name: "the init that follows is ignored", q: url.Values{"host": {"localhost"}, "port": {"5432"}}, init: `{"host":"localhost","port":1}`, target: "10.0.0.1:5432", fromQuery: true},
		{name: "port with trailing junk", q: url.Values{"host": {"localhost"}, "port": {"5432abc"}}, target: "10.0.0.1:5432", fromQuery: true},
		{name: "port only", q: url.Values{"port": {"5432"}}, init: initMsg, target: "10.0.0.1:5432"},
		{name: "empty host", q: url.Values{"host": {""}, "port": {"5432"}}, init: initMsg, target: "10.0.0.1:5432"},
		{name: "host only", q: url.Values{"host": {"localhost"}}, init: initMsg, target: "10.0.0.1:5432"},
		{name: "port not a number", q: url.Values{"host": {"localhost"}, "port": {"abc"}}, init: initMsg, target: "10.0.0.1:5432"},
		{name: "port 0 in the query is dialled", q: url.Values{"host": {"localhost"}, "port": {"0"}}, code: websocket.StatusInternalError, reason: "Failed to connect to target"},
		{name: "init without host means localhost", init: `{"port":5432}`, target: "10.0.0.1:5432"},
		{name: "init port as a string", init: `{"host":"localhost","port":"5432"}`, code: websocket.StatusUnsupportedData, reason: reasonInvalidJSON},
		{name: "init port 0", init: `{"host":"localhost","port":0}`, code: websocket.StatusUnsupportedData, reason: reasonInvalidPort},
		{name: "init port too large", init: `{"host":"localhost","port":65536}`, code: websocket.StatusUnsupportedData, reason: reasonInvalidPort},
		{name: "binary init", init: initMsg, binary: true, code: websocket.StatusUnsupportedData, reason: reasonExpectJSON},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newExecServer(t)
			s.Map("box", 5432, testsvc.Serve(t, testsvc.Echo))
			ws := dialProxy(t, s, tt.q)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.init != "" {
				typ := websocket.MessageText
				if tt.binary {
					typ = websocket.MessageBinary
				}
				if err := ws.Write(ctx, typ, []byte(tt.init)); err != nil {
					t.Fatal(err)
				}
			}
			typ, msg, err := ws.Read(ctx)
			if tt.target == "" {
				var ce websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != tt.code || !strings.HasPrefix(ce.Reason, tt.reason) {
					t.Fatalf("got %s %v, want close %d %q", msg, err, tt.code, tt.reason)
				}
				return
			}
			var r struct{ Status, Target string }
			if err != nil || typ != websocket.MessageText || json.Unmarshal(msg, &r) != nil || r.Status != "connected" || r.Target != tt.target {
				t.Fatalf("got %s %v, want connected to %s", msg, err, tt.target)
			}
			if err := ws.Write(ctx, websocket.MessageBinary, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "ping" {
				t.Fatalf("echo %q %v", msg, err)
			}
			st, _ := s.SpriteStats("box")
			if (st.QueryInits == 1) != tt.fromQuery {
				t.Errorf("query inits %d, want the target from the query: %v", st.QueryInits, tt.fromQuery)
			}
		})
	}
}

// TestPendingInitEnds: the init is read without a timeout, as the real
// server reads it, but a sleep or the server's Close still ends the wait
// (and goleak would see a handler left behind).
func TestPendingInitEnds(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(*Server)
	}{
		{"sleep", func(s *Server) { s.Sleep("box") }},
		{"close", func(s *Server) { s.Close() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newExecServer(t)
			ws := dialProxy(t, s, nil)
			// Counted under the same lock that registers it as waiting
			// for its init, which a sleep or Close must cut.
			testsvc.Eventually(t, "the link to wait for its init", func() bool {
				st, _ := s.SpriteStats("box")
				return st.ProxyConnects == 1
			})
			tt.end(s)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, _, err := ws.Read(ctx); err == nil || ctx.Err() != nil {
				t.Errorf("the link waiting for its init was not cut: %v", err)
			}
		})
	}
}
