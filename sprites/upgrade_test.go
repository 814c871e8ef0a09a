package sprites_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// connectProxy is an HTTP proxy that only tunnels (CONNECT), the kind
// HTTPS_PROXY names. It counts the tunnels it opened.
func connectProxy(t *testing.T) (*url.URL, *atomic.Int32) {
	var tunnels atomic.Int32
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			up.Close()
			return
		}
		tunnels.Add(1)
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		wg.Add(2)
		for _, p := range [][2]net.Conn{{c, up}, {up, c}} {
			go func() {
				defer wg.Done()
				io.Copy(p[0], p[1])
				p[0].Close()
				p[1].Close()
			}()
		}
	}))
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	u, _ := url.Parse(srv.URL)
	return u, &tunnels
}

// TestDialOverTLS runs the proxy link over verified TLS, as to the real
// API: straight to it, and through an HTTP proxy. Either way the bytes
// echo, and only the proxied dials pass through the proxy.
func TestDialOverTLS(t *testing.T) {
	certs := httptest.NewUnstartedServer(nil) // for its certificate, and a client that trusts it
	certs.StartTLS()
	defer certs.Close()
	sim := spritestest.New(spritestest.Options{Token: token, WakeDelay: 50 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim.Start(tls.NewListener(ln, certs.TLS))
	t.Cleanup(sim.Close)
	sim.Map("db", 5432, echoServer(t, 0))
	proxy, tunnels := connectProxy(t)

	for _, tt := range []struct {
		name    string
		proxy   *url.URL
		tunnels int32
	}{{"straight", nil, 0}, {"through a proxy", proxy, 2}} {
		t.Run(tt.name, func(t *testing.T) {
			tunnels.Store(0)
			tr := certs.Client().Transport.(*http.Transport).Clone()
			if tt.proxy != nil {
				tr.Proxy = http.ProxyURL(tt.proxy)
			}
			c, err := sprites.New(sprites.Options{APIURL: "https://" + ln.Addr().String(), Token: token, HTTPClient: &http.Client{Transport: tr}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := range 2 {
				link, err := c.Dial(context.Background(), "db", "localhost", 5432)
				if err != nil {
					t.Fatalf("dial %d: %v", i+1, err)
				}
				roundTrip(t, link, strings.Repeat("tls ", 10000))
				link.CloseNow()
			}
			if got := tunnels.Load(); got != tt.tunnels {
				t.Errorf("the proxy tunnelled %d dials, want %d", got, tt.tunnels)
			}
		})
	}
}

// stallingAPI accepts connections and answers each with reply, then
// nothing more; they close when the test ends.
func stallingAPI(t *testing.T, reply string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if reply != "" {
				c.Write([]byte(reply)) // may block until the client reads or goes: fine for what we send
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// TestDialStalledUpgrade: an API that takes the connection and never
// answers, or answers a header without end, gives a retryable error
// within the handshake timeout, or as soon as the caller gives up. Nothing
// is left running (goleak checks, in TestMain).
func TestDialStalledUpgrade(t *testing.T) {
	endless := "HTTP/1.1 101 Switching Protocols\r\nX-Pad: " + strings.Repeat("a", 2<<20)
	for _, tt := range []struct {
		name      string
		reply     string
		handshake time.Duration
		cancel    bool
		want      error
	}{
		{name: "silent, handshake timeout", handshake: 100 * time.Millisecond, want: sprites.ErrTimeout},
		{name: "silent, caller cancels", handshake: time.Minute, cancel: true, want: context.Canceled},
		{name: "header without end", reply: endless, handshake: time.Minute, want: sprites.ErrNetwork},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := sprites.New(sprites.Options{APIURL: stallingAPI(t, tt.reply), Token: token, HandshakeTimeout: tt.handshake})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			res := make(chan error, 1)
			go func() {
				link, err := c.Dial(ctx, "db", "localhost", 5432)
				if err == nil {
					link.CloseNow()
				}
				res <- err
			}()
			select {
			case err = <-res:
			case <-time.After(20 * time.Second): // a failure detector, not a timing
				t.Fatal("Dial still blocked")
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var se *sprites.Error
			if tt.want != context.Canceled && (!errors.As(err, &se) || se.Class != sprites.Retryable) {
				t.Errorf("err = %v, want a retryable *sprites.Error", err)
			}
		})
	}
}
