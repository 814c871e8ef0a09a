package sprites_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
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
	}{{"straight", nil, 0}, {"through a proxy", proxy, 3}} { // 2 links and the message-size probe
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
			c.Close() // waits for the probe
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

// TestDialKeepsBytesThatCameWithThe101: a server may send its first frames
// in the same segment as the 101, and they land in the buffer that read the
// response header. They must reach the link before anything read from the
// connection after them.
func TestDialKeepsBytesThatCameWithThe101(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		rd := bufio.NewReader(c)
		req, err := http.ReadRequest(rd)
		if err != nil {
			return
		}
		h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		frame := func(op byte, p string) string { return string([]byte{0x80 | op, byte(len(p))}) + p }
		// The 101, "connected" and the first data in one write; more data
		// follows once the client has read them (it sends its init message
		// after the upgrade), so that it comes from the connection itself.
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+base64.StdEncoding.EncodeToString(h[:])+"\r\n\r\n"+
			frame(1, `{"status":"connected","target":"10.0.0.1:7"}`)+frame(2, "first "))
		if _, err := rd.ReadByte(); err != nil {
			return
		}
		io.WriteString(c, frame(2, "second"))
		io.Copy(io.Discard, c) // until the client closes
	}()
	// MaxMessage at SafeMessage: no probe link, as this server serves one.
	c, err := sprites.New(sprites.Options{APIURL: "http://" + ln.Addr().String(), Token: token, MaxMessage: sprites.SafeMessage})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	link, err := c.Dial(context.Background(), "db", "localhost", 7)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("first second"))
	_, err = io.ReadFull(link, got)
	link.CloseNow()
	<-done
	if err != nil || string(got) != "first second" || link.Target() != "10.0.0.1:7" {
		t.Fatalf("read %q, %v (target %q), want \"first second\" from 10.0.0.1:7", got, err, link.Target())
	}
}
