package sprites_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// limitServer plays the in-sprite proxy as far as message sizes go: it
// reads at most limit bytes per message (a larger one closes the link with
// 1009, as coder/websocket's read limit does in the real server), takes
// the target from the query when host and port are both there, rejects
// port 0 with 1003, and echoes binary messages, noting the largest.
type limitServer struct {
	limit   atomic.Int64
	largest atomic.Int64 // of the data messages echoed
	probes  atomic.Int64 // init messages naming port 0
	links   atomic.Int64 // links that said "connected"
	waking  atomic.Bool  // answer upgrades without a query target with 503
	URL     string
}

func newLimitServer(t *testing.T, limit int64) *limitServer {
	s := &limitServer{}
	s.limit.Store(limit)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *limitServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	noQuery := q.Get("host") == "" || q.Get("port") == ""
	if s.waking.Load() && noQuery {
		http.Error(w, "Process not ready after 30s", http.StatusServiceUnavailable)
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer ws.CloseNow()
	ws.SetReadLimit(s.limit.Load())
	ctx := r.Context()
	if noQuery {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			return // a 1009 has been sent
		}
		var init struct{ Port int }
		if json.Unmarshal(msg, &init) != nil || init.Port < 1 {
			s.probes.Add(1)
			ws.Close(websocket.StatusUnsupportedData, "Invalid port number")
			return
		}
	}
	if ws.Write(ctx, websocket.MessageText, []byte(`{"status":"connected","target":"10.0.0.1:7"}`)) != nil {
		return
	}
	s.links.Add(1)
	for {
		typ, msg, err := ws.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageBinary {
			continue // the init after a query target
		}
		if n := int64(len(msg)); n > s.largest.Load() {
			s.largest.Store(n)
		}
		if ws.Write(ctx, websocket.MessageBinary, msg) != nil {
			return
		}
	}
}

// fakeNow is a settable clock for the limit's recheck.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeNow) Add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

// events collects LimitEvents.
type events struct {
	mu  sync.Mutex
	all []sprites.LimitEvent
	ch  chan sprites.LimitEvent
}

func newEvents() *events { return &events{ch: make(chan sprites.LimitEvent, 16)} }

func (e *events) add(ev sprites.LimitEvent) { e.ch <- ev }

func (e *events) next(t *testing.T) sprites.LimitEvent {
	t.Helper()
	select {
	case ev := <-e.ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no limit event")
		return sprites.LimitEvent{}
	}
}

// echo writes n bytes on link and checks they come back whole.
func echo(t *testing.T, link *sprites.Link, n int) {
	t.Helper()
	data := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
	werr := make(chan error, 1)
	go func() { _, err := link.Write(data); werr <- err }()
	got := make([]byte, n)
	if _, err := io.ReadFull(link, got); err != nil {
		t.Fatalf("echo of %d bytes: %v", n, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("echo differs")
	}
}

// TestMessageLimitLearned: with the default MaxMessage, a sprite that reads
// 1,024 bytes per message and one that reads megabytes both carry a large
// write on the very first link, and the probe beside it learns which one it
// is: large messages where they are accepted, never a lost link where not.
func TestMessageLimitLearned(t *testing.T) {
	for _, tt := range []struct {
		name      string
		limit     int64
		wantState sprites.LimitState
		wantBytes int
	}{
		{"1024-byte server", 1024, sprites.LimitRefused, sprites.SafeMessage},
		{"large server", 16 << 20, sprites.LimitAccepted, sprites.DefaultMaxMessage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newLimitServer(t, tt.limit)
			evs := newEvents()
			c, err := sprites.New(sprites.Options{APIURL: srv.URL, Token: token, OnMessageLimit: evs.add})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			if lim := c.MessageLimit("db"); lim.State != sprites.LimitUnknown || lim.Bytes != sprites.SafeMessage {
				t.Fatalf("before any link: %+v, want unknown at SafeMessage", lim)
			}
			link, err := c.Dial(context.Background(), "db", "localhost", 7)
			if err != nil {
				t.Fatal(err)
			}
			defer link.CloseNow()
			echo(t, link, 256<<10) // whatever the probe's timing, nothing is refused
			ev := evs.next(t)
			if ev.Err != nil || ev.Limit.State != tt.wantState || ev.Limit.Bytes != tt.wantBytes || ev.Refused != 0 {
				t.Fatalf("event %+v, want %s at %d", ev, tt.wantState, tt.wantBytes)
			}
			if link.MaxMessage() != tt.wantBytes {
				t.Errorf("the open link sends %d, want %d", link.MaxMessage(), tt.wantBytes)
			}
			echo(t, link, 256<<10)
			if got := srv.largest.Load(); got != int64(tt.wantBytes) {
				t.Errorf("largest message %d, want %d", got, tt.wantBytes)
			}
			// More links to the sprite: no more probes.
			for range 3 {
				l, err := c.Dial(context.Background(), "db", "localhost", 7)
				if err != nil {
					t.Fatal(err)
				}
				echo(t, l, 64<<10)
				l.CloseNow()
			}
			lim := c.MessageLimit("db")
			if lim.Probes != 1 || lim.Refusals != 0 {
				t.Errorf("limit %+v, want one probe and no refusal", lim)
			}
			if srv.links.Load() != 4 {
				t.Errorf("%d links connected, want 4: the probe must not dial a target", srv.links.Load())
			}
		})
	}
}

// TestMessageLimitConfigured: a MaxMessage at or below SafeMessage needs no
// probe.
func TestMessageLimitConfigured(t *testing.T) {
	srv := newLimitServer(t, 1024)
	c, err := sprites.New(sprites.Options{APIURL: srv.URL, Token: token, MaxMessage: 512})
	if err != nil {
		t.Fatal(err)
	}
	link, err := c.Dial(context.Background(), "db", "localhost", 7)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, link, 64<<10)
	link.CloseNow()
	c.Close()
	if lim := c.MessageLimit("db"); lim.State != sprites.LimitConfigured || lim.Bytes != 512 || lim.Probes != 0 {
		t.Errorf("limit %+v, want configured at 512 with no probe", lim)
	}
	if srv.largest.Load() != 512 || srv.probes.Load() != 0 {
		t.Errorf("largest message %d, probes %d", srv.largest.Load(), srv.probes.Load())
	}
}

// TestMessageLimitRecheckAndChange: the service can change under a running
// daemon. A refused size is probed again after the recheck period; an
// accepted one that is later refused on a live link drops to SafeMessage
// at once and says so.
func TestMessageLimitRecheckAndChange(t *testing.T) {
	srv := newLimitServer(t, 1024)
	clock := &fakeNow{t: time.Unix(1_000_000, 0)}
	evs := newEvents()
	c, err := sprites.New(sprites.Options{APIURL: srv.URL, Token: token, OnMessageLimit: evs.add, Now: clock.Now, LimitRecheck: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	dial := func() *sprites.Link {
		t.Helper()
		l, err := c.Dial(context.Background(), "db", "localhost", 7)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.CloseNow() })
		return l
	}
	dial()
	if ev := evs.next(t); ev.Limit.State != sprites.LimitRefused {
		t.Fatalf("first probe: %+v", ev)
	}
	srv.limit.Store(16 << 20) // the service is upgraded
	clock.Add(59 * time.Minute)
	dial()
	if lim := c.MessageLimit("db"); lim.Probes != 1 {
		t.Fatalf("probed again before the recheck: %+v", lim)
	}
	clock.Add(2 * time.Minute)
	dial()
	if ev := evs.next(t); ev.Limit.State != sprites.LimitAccepted || ev.Limit.Bytes != sprites.DefaultMaxMessage {
		t.Fatalf("recheck: %+v", ev)
	}

	// And back: a live link is refused a 32 KiB message.
	srv.limit.Store(1024)
	l := dial()
	l.Write(make([]byte, 64<<10))
	_, err = io.ReadAll(l)
	if !errors.Is(err, sprites.ErrMessageTooBig) {
		t.Fatalf("read %v, want ErrMessageTooBig", err)
	}
	ev := evs.next(t)
	if ev.Refused != sprites.DefaultMaxMessage || ev.Limit.Bytes != sprites.SafeMessage || ev.Limit.State != sprites.LimitRefused || ev.Limit.Refusals != 1 {
		t.Fatalf("refusal event %+v", ev)
	}
	echo(t, dial(), 128<<10)
}

// TestMessageLimitProbeInconclusive: a probe that finds out nothing (here
// a 503, as from a sprite that fell asleep again) keeps SafeMessage and is
// tried again on a later dial once probeRetry has passed.
func TestMessageLimitProbeInconclusive(t *testing.T) {
	srv := newLimitServer(t, 16<<20)
	clock := &fakeNow{t: time.Unix(1_000_000, 0)}
	evs := newEvents()
	c, err := sprites.New(sprites.Options{APIURL: srv.URL, Token: token, OnMessageLimit: evs.add, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	dial := func() {
		t.Helper()
		l, err := c.Dial(context.Background(), "db", "localhost", 7)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.CloseNow() })
	}
	srv.waking.Store(true)
	dial()
	if ev := evs.next(t); ev.Err == nil || ev.Limit.State != sprites.LimitUnknown || ev.Limit.Bytes != sprites.SafeMessage {
		t.Fatalf("event %+v, want an inconclusive probe", ev)
	}
	srv.waking.Store(false)
	dial()
	if lim := c.MessageLimit("db"); lim.Probes != 1 {
		t.Fatalf("probed again at once: %+v", lim)
	}
	clock.Add(10 * time.Second)
	dial()
	if ev := evs.next(t); ev.Err != nil || ev.Limit.State != sprites.LimitAccepted {
		t.Fatalf("retried probe: %+v", ev)
	}
}

// TestMessageLimitFailedDialProbesNothing: a dial that fails (a bad token,
// a missing sprite) starts no probe, so it costs one request, not two.
func TestMessageLimitFailedDialProbesNothing(t *testing.T) {
	e := newEnv(t, spritestest.Options{}, sprites.Options{Token: "wrong"})
	if _, err := e.client.Dial(context.Background(), "db", "localhost", 5432); !sprites.IsPermanent(err) {
		t.Fatalf("dial with a bad token: %v", err)
	}
	e.client.Close()
	if lim := e.client.MessageLimit("db"); lim.Probes != 0 {
		t.Errorf("limit %+v after a failed dial, want no probe", lim)
	}
}

// TestMessageLimitEmulator runs the same against the emulator at both of
// its limits: what the e2e suite stands on.
func TestMessageLimitEmulator(t *testing.T) {
	for _, limit := range []int64{1024, spritestest.DefaultMaxMessage} {
		e := newEnv(t, spritestest.Options{MaxMessage: limit}, sprites.Options{})
		link, err := e.client.Dial(context.Background(), "db", "localhost", 5432)
		if err != nil {
			t.Fatal(err)
		}
		echo(t, link, 1<<20)
		link.CloseNow()
		e.client.Close()
		want := sprites.LimitAccepted
		if limit == 1024 {
			want = sprites.LimitRefused
		}
		if lim := e.client.MessageLimit("db"); lim.State != want || lim.Refusals != 0 {
			t.Errorf("emulator at %d: %+v, want %s", limit, lim, want)
		}
	}
}
