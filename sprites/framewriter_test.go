package sprites

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// recorder is the connection under a frameWriter: it keeps every write.
type recorder struct {
	net.Conn
	mu     sync.Mutex
	writes int
	all    []byte // without a Conn: everything written
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writes++
	if r.Conn == nil {
		r.all = append(r.all, p...)
	}
	r.mu.Unlock()
	if r.Conn == nil {
		return len(p), nil
	}
	return r.Conn.Write(p)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// appendFrame appends a masked client frame with an n-byte payload.
func appendFrame(b []byte, n int, fill byte) []byte {
	b = append(b, 0x82) // FIN, binary
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, 1, 2, 3, 4) // masking key
	return append(b, bytes.Repeat([]byte{fill}, n)...)
}

// FuzzFrameWriter feeds frames of fuzzed sizes, cut at fuzzed points, to
// a frameWriter. What reaches the connection must be exactly what went in,
// and whenever a write ends at a frame boundary nothing may be held back:
// a held byte would wait for a write that may never come.
func FuzzFrameWriter(f *testing.F) {
	f.Add([]byte{0, 1, 125, 126}, []byte{1, 7, 200})
	f.Add([]byte{255, 255, 0}, []byte{0})
	f.Add([]byte{100, 200}, []byte{3, 3, 3, 3, 3})
	f.Fuzz(func(t *testing.T, sizes, cuts []byte) {
		var stream []byte
		var ends []int // frame boundaries in stream
		for i, s := range sizes {
			if len(stream) > 256<<10 {
				break
			}
			n := int(s) * int(s) // 0 to 65025: all three length encodings
			if i%5 == 4 {
				n = 70000 + int(s) // a frame larger than frameHold
			}
			stream = appendFrame(stream, n, byte(i))
			ends = append(ends, len(stream))
		}
		rec := &recorder{}
		w := &frameWriter{Conn: rec, armed: true}
		pos, c, next := 0, 0, 0
		for pos < len(stream) {
			step := 4096 // coder/websocket's flushes
			if len(cuts) > 0 {
				cut := cuts[c%len(cuts)]
				step = 1 + int(cut)*int(cut)
				// Some writes come inside a Link's hold, as its messages do.
				if cut%3 == 0 && !w.held {
					w.hold()
				} else if cut%3 == 1 && w.held {
					if err := w.release(); err != nil {
						t.Fatal(err)
					}
				}
			}
			c++
			p := stream[pos:min(pos+step, len(stream))]
			if n, err := w.Write(p); n != len(p) || err != nil {
				t.Fatalf("Write returned %d, %v for %d bytes", n, err, len(p))
			}
			pos += len(p)
			for next < len(ends) && ends[next] < pos {
				next++
			}
			if next < len(ends) && ends[next] == pos && !w.held && len(rec.all) != pos {
				t.Fatalf("at a frame boundary (%d bytes) only %d reached the connection", pos, len(rec.all))
			}
		}
		if err := w.release(); err != nil {
			t.Fatal(err)
		}
		if w.buf != nil || w.hn != 0 || w.rest != 0 {
			t.Fatalf("frameWriter holds state after whole frames: buf %v, hn %d, rest %d", w.buf != nil, w.hn, w.rest)
		}
		if !bytes.Equal(rec.all, stream) {
			t.Fatalf("connection got %d bytes, want the %d written, unchanged", len(rec.all), len(stream))
		}
	})
}

// TestFrameWriterHoldJoinsFrames: while held, 1,024-byte messages (a
// sprite that reads no more) leave in one write per frameHold, not one
// each, and release sends the rest; a control frame written meanwhile
// keeps its place.
func TestFrameWriterHoldJoinsFrames(t *testing.T) {
	rec := &recorder{}
	w := &frameWriter{Conn: rec, armed: true}
	var want []byte
	w.hold()
	for i := range 64 {
		frame := appendFrame(nil, 1024, byte(i))
		if i == 10 {
			frame = append([]byte{0x89, 0x80, 1, 2, 3, 4}, frame...) // a ping before it
		}
		want = append(want, frame...)
		if _, err := w.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	held := rec.count()
	if err := w.release(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec.all, want) {
		t.Fatalf("connection got %d bytes, want the %d written, in order", len(rec.all), len(want))
	}
	// 64 frames of 1,032 bytes: 66 KiB, which is two full holds and a rest.
	if held != 2 || rec.count() != 3 {
		t.Errorf("%d writes while held and %d in all, want 2 and 3", held, rec.count())
	}
	if _, err := w.Write(appendFrame(nil, 10, 1)); err != nil || rec.count() != 4 {
		t.Errorf("after release a frame waited (%d writes, %v)", rec.count(), err)
	}
}

// TestFrameWriterJoinsMessages sends messages through real coder/websocket
// connections, plain and TLS. Each arrives intact; on the plain one, each
// message of up to 32 KiB reaches the connection in one write, where
// coder/websocket alone makes one per 4 KiB.
func TestFrameWriterJoinsMessages(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "http"
		if useTLS {
			name = "https"
		}
		t.Run(name, func(t *testing.T) {
			got := make(chan []byte, 16)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ws, err := websocket.Accept(w, r, nil)
				if err != nil {
					return
				}
				defer ws.CloseNow()
				ws.SetReadLimit(-1)
				for {
					_, msg, err := ws.Read(r.Context())
					if err != nil {
						return
					}
					got <- msg
				}
			})
			var srv *httptest.Server
			if useTLS {
				srv = httptest.NewTLSServer(h)
			} else {
				srv = httptest.NewServer(h)
			}
			defer srv.Close()
			base := srv.Client()
			bt := base.Transport.(*http.Transport)
			var rec *recorder
			bt.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				rec = &recorder{Conn: c}
				return rec, nil
			}
			hc, up := upgradeClient(base, bt.TLSClientConfig, tls.NewLRUClientSessionCache(4))
			ws, _, err := websocket.Dial(context.Background(), srv.URL, &websocket.DialOptions{HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			if up.fw == nil {
				t.Fatal("the upgrade's connection is not a frameWriter")
			}
			up.fw.armed = true
			for i, n := range []int{0, 1, 125, 126, 4095, 4096, 32 << 10, 65535, 200 << 10} {
				before := rec.count()
				msg := bytes.Repeat([]byte{byte(i)}, n)
				if err := ws.Write(context.Background(), websocket.MessageBinary, msg); err != nil {
					t.Fatal(err)
				}
				select {
				case b := <-got:
					if !bytes.Equal(b, msg) {
						t.Fatalf("message %d (%d bytes) arrived as %d bytes, or changed", i, n, len(b))
					}
				case <-time.After(10 * time.Second): // a failure detector, not a timing
					t.Fatalf("message %d (%d bytes) never arrived: held back", i, n)
				}
				if writes := rec.count() - before; !useTLS && n <= 32<<10 && writes != 1 {
					t.Errorf("a %d-byte message took %d writes, want 1", n, writes)
				}
			}
		})
	}
}

// sizeRecorder is a connection that keeps the size of every write.
type sizeRecorder struct {
	net.Conn
	mu    sync.Mutex
	sizes []int
}

func (r *sizeRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(p))
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *sizeRecorder) since(k int) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.sizes[k:]...)
}

// TestWebsocketWritesIn4KiB pins what frameWriter is for: coder/websocket,
// alone, writes a client's 32 KiB message through its private 4 KiB
// bufio.Writer, so the message reaches the connection in several writes
// of at most 4 KiB.
func TestWebsocketWritesIn4KiB(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(-1)
		for {
			if _, _, err := ws.Read(r.Context()); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	base := srv.Client()
	var rec *sizeRecorder
	base.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		rec = &sizeRecorder{Conn: c}
		return rec, nil
	}
	hc, up := upgradeClient(base, nil, nil)
	ws, _, err := websocket.Dial(context.Background(), srv.URL, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if up.fw == nil || up.fw.armed {
		t.Fatal("want the upgrade's frameWriter in place and not armed, passing writes through")
	}
	before := len(rec.since(0))
	if err := ws.Write(context.Background(), websocket.MessageBinary, make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	// ws.Write returns once its last write has.
	sizes := rec.since(before)
	big := slices.ContainsFunc(sizes, func(n int) bool { return n > 4<<10 })
	if len(sizes) < 2 || big {
		t.Fatalf("coder/websocket wrote a 32 KiB message as writes of %v bytes, not several of at most 4 KiB: "+
			"after a coder/websocket upgrade frameWriter may be unnecessary, or wrong; check what it assumes", sizes)
	}
}

// TestUpgradeResumesTLS: each proxy link is a new TLS connection to the API;
// with the client's session cache the second one resumes the first's
// session instead of a full handshake and certificate check.
func TestUpgradeResumesTLS(t *testing.T) {
	resumed := make(chan bool, 2)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resumed <- r.TLS.DidResume
		if ws, err := websocket.Accept(w, r, nil); err == nil {
			ws.CloseNow()
		}
	}))
	defer srv.Close()
	sessions := tls.NewLRUClientSessionCache(4)
	for i, want := range []bool{false, true} {
		hc, up := upgradeClient(srv.Client(), srv.Client().Transport.(*http.Transport).TLSClientConfig, sessions)
		ws, _, err := websocket.Dial(context.Background(), srv.URL, &websocket.DialOptions{HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		ws.CloseNow()
		if got := <-resumed; got != want || up.fw == nil {
			t.Fatalf("upgrade %d: resumed %v, want %v (frameWriter in place: %v)", i+1, got, want, up.fw != nil)
		}
	}
}
