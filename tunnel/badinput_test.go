package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// hostileAPI answers /proxy with one misbehaviour; it counts requests.
type hostileAPI struct {
	requests atomic.Int64
	handle   func(w http.ResponseWriter, r *http.Request)
}

func (h *hostileAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	h.handle(w, r)
}

// connected accepts the upgrade and completes the init exchange.
func connected(w http.ResponseWriter, r *http.Request) (*websocket.Conn, context.Context) {
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil, nil
	}
	ctx := r.Context()
	ws.Read(ctx)
	ws.Write(ctx, websocket.MessageText, []byte(`{"status":"connected","target":"10.0.0.1:7"}`))
	return ws, ctx
}

func daemonFor(t *testing.T, apiURL, settings string) (*Daemon, *testsvc.LogBuffer) {
	t.Helper()
	logs := &testsvc.LogBuffer{}
	d := New(Options{Log: zerolog.New(logs), Getenv: func(string) string { return testToken }})
	t.Cleanup(func() { d.Shutdown(time.Second) })
	// These tests bound each connection's requests; spare links would be
	// requests of their own, made on purpose.
	cfg, err := config.Parse("bad.yaml", []byte(fmt.Sprintf("api_url: %s\ntoken_file: /x\nshutdown_grace: 1s\nwarm_links: 0\n%sforwards:\n  - 0:db:7\n", apiURL, settings)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	return d, logs
}

// readAll reads until the connection ends, and returns what arrived and how
// it ended (nil for a clean EOF).
func readAll(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var buf bytes.Buffer
	_, err := io.Copy(&buf, c)
	return buf.Bytes(), err
}

func TestBadInputFromTheAPI(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 512<<10) // 8 MiB in one message
	for _, tt := range []struct {
		name     string
		handle   func(w http.ResponseWriter, r *http.Request)
		tls      bool
		settings string
		clients  int
		wantData []byte
		wantLog  string
		maxReqs  int64
	}{
		{
			name: "HTML instead of an upgrade",
			handle: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "<html><body><h1>Sign in</h1></body></html>")
			},
			clients: 1, wantLog: "the API rejected the request", maxReqs: 1,
		},
		{
			name: "text frame in the data phase",
			handle: func(w http.ResponseWriter, r *http.Request) {
				if ws, ctx := connected(w, r); ws != nil {
					ws.Write(ctx, websocket.MessageBinary, []byte("before"))
					ws.Write(ctx, websocket.MessageText, []byte("not data"))
					ws.Read(ctx)
				}
			},
			clients: 1, wantData: []byte("before"), maxReqs: 2, // the link and the message-size probe
		},
		{
			name: "oversized message is relayed whole",
			handle: func(w http.ResponseWriter, r *http.Request) {
				if ws, ctx := connected(w, r); ws != nil {
					ws.Write(ctx, websocket.MessageBinary, big)
					ws.Close(websocket.StatusNormalClosure, "")
				}
			},
			clients: 1, wantData: big, maxReqs: 2, // the link and the message-size probe
		},
		{
			name: "close in mid-handshake",
			handle: func(w http.ResponseWriter, r *http.Request) {
				if ws, err := websocket.Accept(w, r, nil); err == nil {
					ws.CloseNow()
				}
			},
			settings: "wake_timeout: 1s\n", clients: 1, wantLog: "did not wake in time", maxReqs: 20,
		},
		{
			name: "500 storm, 50 clients share the retries",
			handle: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "upstream exploded", http.StatusInternalServerError)
			},
			// Unshared, 50 clients × ~6 retries would be ~300 requests. Each
			// client dials once itself, and may once more as the wake ends.
			settings: "wake_timeout: 1s\n", clients: 50, wantLog: "did not wake in time", maxReqs: 2*50 + 20,
		},
		{
			name:     "untrusted TLS certificate",
			tls:      true,
			handle:   func(w http.ResponseWriter, r *http.Request) {},
			settings: "wake_timeout: 30s\n", clients: 1, wantLog: "TLS certificate is not trusted", maxReqs: 0,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := &hostileAPI{handle: tt.handle}
			var srv *httptest.Server
			if tt.tls {
				srv = httptest.NewUnstartedServer(api)
				srv.Config.ErrorLog = nil
				srv.StartTLS()
			} else {
				srv = httptest.NewServer(api)
			}
			t.Cleanup(srv.Close)
			d, logs := daemonFor(t, srv.URL, tt.settings)
			addr := d.Status()[0].Addrs[0]
			var wg sync.WaitGroup
			for range tt.clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.Dial("tcp", addr)
					if err != nil {
						if !errors.Is(err, syscall.ECONNRESET) {
							t.Error(err)
						}
						return
					}
					defer c.Close()
					got, err := readAll(c)
					if tt.wantData != nil && !bytes.Equal(got, tt.wantData) {
						t.Errorf("client got %d bytes, want %d", len(got), len(tt.wantData))
					}
					wantClean := bytes.Equal(tt.wantData, big)
					if wantClean && err != nil {
						t.Errorf("clean close ended with %v", err)
					}
					if !wantClean && !errors.Is(err, syscall.ECONNRESET) {
						t.Errorf("client saw %v, want a reset", err)
					}
				}()
			}
			wg.Wait()
			if n := api.requests.Load(); n > tt.maxReqs {
				t.Errorf("%d API requests, want at most %d", n, tt.maxReqs)
			}
			if tt.wantLog != "" && !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logs.String())
			}
			// Identical failures are logged once per interval, not per client.
			if n := strings.Count(logs.String(), `"level":"warn"`); tt.clients > 1 && n > tt.clients/5 {
				t.Errorf("%d clients failing alike wrote %d warnings", tt.clients, n)
			}
			if strings.Contains(logs.String(), testToken) {
				t.Error("token in the log")
			}
			// The daemon lives on: the listener still accepts. (A reset can
			// land before connect returns; that too was an accept.)
			c, err := net.Dial("tcp", addr)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("forward dead after bad input: %v", err)
			}
			if c != nil {
				c.Close()
			}
		})
	}
}

func TestBadInputOnTheLocalPort(t *testing.T) {
	r := newRig(t, spritestest.Options{}, "", "  - 0:db:7\n")
	addr := r.status(t, "db:7").Addrs[0]

	t.Run("garbage is carried untouched", func(t *testing.T) {
		garbage := make([]byte, 1<<16)
		for i := range garbage {
			garbage[i] = byte(i * 7)
		}
		c := r.dial(t, "db:7")
		go c.Write(garbage)
		got := make([]byte, len(garbage))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, garbage) {
			t.Fatalf("garbage echo: %v", err)
		}
	})

	t.Run("connect-and-drop storm", func(t *testing.T) {
		const storm = 5000
		before := r.status(t, "db:7").Total
		start := time.Now()
		var wg sync.WaitGroup
		var next, dialled atomic.Int64
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= storm {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						continue
					}
					dialled.Add(1)
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			}()
		}
		wg.Wait()
		took := time.Since(start).Round(time.Millisecond)
		testsvc.Eventually(t, "the storm to drain", func() bool { return r.status(t, "db:7").Open == 0 })
		accepted := r.status(t, "db:7").Total - before
		// The kernel may discard a connection reset while still in the
		// accept queue; the daemon can only count what accept returns.
		t.Logf("%d connects (%d succeeded) in %v; the daemon accepted %d", storm, dialled.Load(), took, accepted)
		if accepted == 0 || accepted > dialled.Load() {
			t.Errorf("accepted %d of %d", accepted, dialled.Load())
		}
		echoCheck(t, r.dial(t, "db:7"), 4096)
	})
}

func TestMaxConnections(t *testing.T) {
	r := newRig(t, spritestest.Options{}, "", "  - {listen: 0, sprite: db, port: 7, max_connections: 3}\n")
	var held []*net.TCPConn
	for range 3 {
		c := r.dial(t, "db:7")
		echoCheck(t, c, 16)
		held = append(held, c)
	}
	// The daemon accepts and resets at once. The reset can beat the end of
	// the client's connect on this machine's network stack, so it may come
	// back from the dial itself; either way it must be a reset.
	over, err := net.Dial("tcp", r.status(t, "db:7").Addrs[0])
	if err == nil {
		defer over.Close()
		_, err = readAll(over)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection over the limit: %v, want a reset", err)
	}
	if !strings.Contains(r.logs.String(), "max_connections reached (3)") {
		t.Errorf("no log line for the limit:\n%s", r.logs.String())
	}
	held[0].Close()
	testsvc.Eventually(t, "a slot to free", func() bool { return r.status(t, "db:7").Open < 3 })
	echoCheck(t, r.dial(t, "db:7"), 16)
	if st := r.status(t, "db:7"); st.Errors[ClassLimit] != 1 {
		t.Errorf("errors %v", st.Errors)
	}
}

// TestSilentLinkIsDeclaredDead: an API that stops reading (so never answers
// a ping) is, after two keepalive intervals, a dead link: the client gets
// what arrived, then a reset, and status counts a ping timeout.
func TestSilentLinkIsDeclaredDead(t *testing.T) {
	release := make(chan struct{})
	api := &hostileAPI{handle: func(w http.ResponseWriter, r *http.Request) {
		if ws, ctx := connected(w, r); ws != nil {
			ws.Write(ctx, websocket.MessageBinary, []byte("hello"))
			select { // read nothing more: pings go unanswered
			case <-release:
			case <-ctx.Done():
			}
			ws.CloseNow()
		}
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	defer close(release)
	d, logs := daemonFor(t, srv.URL, "keepalive: 200ms\n")
	c, err := net.Dial("tcp", d.Status()[0].Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := readAll(c)
	if string(got) != "hello" || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client got %q then %v; want hello, then a reset", got, err)
	}
	testsvc.Eventually(t, "the ping timeout to be counted", func() bool { return d.Status()[0].Errors[ClassPingTimeout] == 1 })
	if !strings.Contains(logs.String(), "link dead") {
		t.Errorf("no log line for the dead link:\n%s", logs.String())
	}
}
