package sprites_test

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
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "org/1/tok/s3cr3t-value"

// echoServer stands in for a process inside a sprite. With closeAfter > 0
// it closes each connection after echoing that many bytes; with
// closeAfter < 0 it echoes -closeAfter bytes, then resets.
func echoServer(t *testing.T, closeAfter int) string {
	return testsvc.Serve(t, func(c net.Conn) {
		switch {
		case closeAfter < 0:
			io.CopyN(c, c, int64(-closeAfter))
			c.(*net.TCPConn).SetLinger(0)
		case closeAfter > 0:
			io.CopyN(c, c, int64(closeAfter))
		default:
			io.Copy(c, c)
		}
	})
}

type env struct {
	sim    *spritestest.Server
	client *sprites.Client
}

func newEnv(t *testing.T, opts spritestest.Options, copts sprites.Options) env {
	t.Helper()
	if opts.Token == "" {
		opts.Token = token
	}
	if opts.WakeDelay == 0 {
		opts.WakeDelay = 50 * time.Millisecond
	}
	sim := spritestest.NewServer(opts)
	t.Cleanup(sim.Close)
	sim.Map("db", 5432, echoServer(t, 0))
	sim.Map("db", 7, echoServer(t, 5))
	sim.Map("db", 8, echoServer(t, -5))
	copts.APIURL = sim.URL
	if copts.Token == "" {
		copts.Token = token
	}
	c, err := sprites.New(copts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return env{sim: sim, client: c}
}

func roundTrip(t *testing.T, c io.ReadWriter, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

func TestDialFailures(t *testing.T) {
	tests := []struct {
		name      string
		sprite    string
		port      int
		token     string
		opts      spritestest.Options
		sleep     bool
		class     sprites.Class
		cause     error
		status    int
		closeCode int
		reason    string
	}{
		{name: "bad token", sprite: "db", port: 5432, token: "wrong", class: sprites.Permanent, cause: sprites.ErrUnauthorized, status: 401},
		{name: "no such sprite", sprite: "nope", port: 5432, class: sprites.Permanent, cause: sprites.ErrNotFound, status: 404},
		{name: "nothing listens", sprite: "db", port: 9999, class: sprites.Refused, cause: sprites.ErrRefused, closeCode: 1011, reason: "Failed to connect to target"},
		// A port in the query is not range-checked (the real server's way:
		// port 0 there is a refused dial), so the init message is refused.
		{name: "bad init", sprite: "db", port: 0, opts: spritestest.Options{NoQueryInit: true}, class: sprites.Permanent, cause: sprites.ErrBadRequest, closeCode: 1003, reason: "Invalid port number"},
		{name: "cold fail", sprite: "db", port: 5432, sleep: true, opts: spritestest.Options{Faults: spritestest.Faults{ColdProxy: spritestest.ColdFail}},
			class: sprites.Retryable, cause: sprites.ErrWaking, status: 503},
		{name: "cold drop", sprite: "db", port: 5432, sleep: true, opts: spritestest.Options{Faults: spritestest.Faults{ColdProxy: spritestest.ColdDrop}},
			class: sprites.Retryable, cause: sprites.ErrClosedEarly},
		{name: "cold block past max wait", sprite: "db", port: 5432, sleep: true,
			opts:  spritestest.Options{WakeDelay: 2 * time.Second, MaxWait: 50 * time.Millisecond},
			class: sprites.Retryable, cause: sprites.ErrWaking, status: 503, reason: "Process not ready after 50ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts, sprites.Options{Token: tt.token})
			if tt.sleep {
				if err := e.sim.Sleep("db"); err != nil {
					t.Fatal(err)
				}
			}
			link, err := e.client.Dial(context.Background(), tt.sprite, "localhost", tt.port)
			if err == nil {
				link.CloseNow()
				t.Fatal("Dial succeeded, want an error")
			}
			var se *sprites.Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v is not *sprites.Error", err, err)
			}
			if se.Class != tt.class || !errors.Is(err, tt.cause) {
				t.Errorf("got class %v cause %v, want %v %v (err: %v)", se.Class, se.Err, tt.class, tt.cause, err)
			}
			if se.Status != tt.status || se.Code != tt.closeCode {
				t.Errorf("status %d code %d, want %d %d", se.Status, se.Code, tt.status, tt.closeCode)
			}
			if !strings.Contains(se.Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", se.Reason, tt.reason)
			}
			msg := err.Error()
			if !strings.Contains(msg, "sprite "+tt.sprite) || strings.Contains(msg, token) || strings.Contains(msg, "s3cr3t") {
				t.Errorf("error message %q must name the sprite and never the token", msg)
			}
		})
	}
}

// TestDialEcho runs against a server that takes the target from the query
// (and so ignores the init message that follows), and against one that
// waits for the init message. Either way the echo carries exactly the
// bytes written: the init message never reaches the target.
func TestDialEcho(t *testing.T) {
	for _, tt := range []struct {
		name       string
		noQuery    bool
		queryInits int64
	}{{"query", false, 1}, {"init message", true, 0}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, spritestest.Options{NoQueryInit: tt.noQuery}, sprites.Options{})
			link, err := e.client.Dial(context.Background(), "db", "localhost", 5432)
			if err != nil {
				t.Fatal(err)
			}
			defer link.CloseNow()
			if link.Target() != "10.0.0.1:5432" {
				t.Errorf("target %q, want the server's rewrite 10.0.0.1:5432", link.Target())
			}
			roundTrip(t, link, "hello sprite")
			// A write larger than MaxMessage is split, and arrives whole.
			big := bytes.Repeat([]byte("x"), 200<<10)
			go link.Write(big)
			got := make([]byte, len(big))
			if _, err := io.ReadFull(link, got); err != nil || !bytes.Equal(got, big) {
				t.Fatalf("big echo: err %v, equal %v", err, bytes.Equal(got, big))
			}
			link.CloseNow()
			e.client.Close() // waits for the message-size probe
			st, _ := e.sim.SpriteStats("db")
			// Two connects: the link, and the probe that learned the limit.
			if st.ProxyConnects != 2 || st.QueryInits != tt.queryInits || st.BytesIn != int64(len(big)+12) || st.BytesOut != st.BytesIn {
				t.Errorf("emulator stats %+v", st)
			}
		})
	}
}

func TestColdBlockWaitsForWake(t *testing.T) {
	e := newEnv(t, spritestest.Options{WakeDelay: 200 * time.Millisecond}, sprites.Options{})
	e.sim.Sleep("db")
	if st, _ := e.sim.SpriteStats("db"); st.State != "cold" {
		t.Fatalf("state %q after sleep, want cold", st.State)
	}
	start := time.Now()
	link, err := e.client.Dial(context.Background(), "db", "localhost", 5432)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("connected after %v, before the wake delay", waited)
	}
	roundTrip(t, link, "awake")
	if st, _ := e.sim.SpriteStats("db"); st.Wakes != 1 || st.State != "running" {
		t.Errorf("stats %+v, want one wake and running", st)
	}
}

// TestUpstreamResetIsNotEOF: when the server inside the sprite resets its
// connection, the real server closes the link with 1001 "upstream closed".
// That is a failure, and must not read as the end of the data.
func TestUpstreamResetIsNotEOF(t *testing.T) {
	e := newEnv(t, spritestest.Options{}, sprites.Options{})
	link, err := e.client.Dial(context.Background(), "db", "localhost", 8)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	roundTrip(t, link, "12345")
	_, err = link.Read(make([]byte, 1))
	if err == nil || err == io.EOF || websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("read after an upstream reset: %v, want the 1001 close as an error", err)
	}
}

// TestTargetEOF covers what a link shows when the server inside the sprite
// closes: nothing (keep-open), an abnormal cut (drop), or a clean EOF (close).
func TestTargetEOF(t *testing.T) {
	for _, tt := range []struct {
		mode    spritestest.TargetEOF
		wantEOF bool
		wantErr bool
	}{
		{mode: spritestest.EOFKeepOpen},
		{mode: spritestest.EOFDrop, wantErr: true},
		{mode: spritestest.EOFClose, wantEOF: true},
	} {
		t.Run(string(tt.mode), func(t *testing.T) {
			e := newEnv(t, spritestest.Options{Faults: spritestest.Faults{TargetEOF: tt.mode}}, sprites.Options{})
			link, err := e.client.Dial(context.Background(), "db", "localhost", 7)
			if err != nil {
				t.Fatal(err)
			}
			defer link.CloseNow()
			roundTrip(t, link, "12345") // the server closes after 5 bytes
			res := make(chan error, 1)
			go func() { _, err := link.Read(make([]byte, 1)); res <- err }()
			select {
			case err := <-res:
				switch {
				case tt.wantEOF && err != io.EOF:
					t.Errorf("read error %v, want io.EOF", err)
				case tt.wantErr && (err == nil || err == io.EOF):
					t.Errorf("read error %v, want a non-EOF error", err)
				case !tt.wantEOF && !tt.wantErr:
					t.Errorf("read returned %v, want the link kept open", err)
				}
			case <-time.After(300 * time.Millisecond):
				if tt.wantEOF || tt.wantErr {
					t.Fatal("link stayed open after the target closed")
				}
				link.CloseNow()
				<-res
			}
		})
	}
}

// TestMessageTooBig: a server that refuses even SafeMessage bytes closes
// the link with 1009. The link reports it as such, not as a drop, and the
// sprite's next link sends half as much.
func TestMessageTooBig(t *testing.T) {
	e := newEnv(t, spritestest.Options{MaxMessage: 1000}, sprites.Options{MaxMessage: 4096})
	link, err := e.client.Dial(context.Background(), "db", "localhost", 5432)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	link.Write(make([]byte, 4096))
	_, err = io.ReadAll(link)
	var tb *sprites.MessageTooBigError
	if !errors.As(err, &tb) || !errors.Is(err, sprites.ErrMessageTooBig) || tb.Sent != sprites.SafeMessage || tb.Max != sprites.SafeMessage/2 {
		t.Fatalf("read error %v, want a MessageTooBigError for %d bytes, now %d", err, sprites.SafeMessage, sprites.SafeMessage/2)
	}
	want := "the service refused a message of 1024 bytes on sprite db; sending at most 512 from now on"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	link, err = e.client.Dial(context.Background(), "db", "localhost", 5432)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	go link.Write(bytes.Repeat([]byte("y"), 4096))
	got := make([]byte, 4096)
	if _, err := io.ReadFull(link, got); err != nil {
		t.Fatalf("echo after the refusal: %v", err)
	}
	if lim := e.client.MessageLimit("db"); lim.Bytes != 512 || lim.State != sprites.LimitRefused || lim.Refusals != 1 {
		t.Errorf("limit %+v, want 512 bytes, refused once", lim)
	}
}

func TestSleepCutsLiveLink(t *testing.T) {
	e := newEnv(t, spritestest.Options{}, sprites.Options{})
	link, err := e.client.Dial(context.Background(), "db", "localhost", 5432)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	roundTrip(t, link, "before")
	e.sim.Sleep("db")
	_, err = link.Read(make([]byte, 16))
	if err == nil || err == io.EOF {
		t.Fatalf("read after sleep = %v, want an abnormal close", err)
	}
	if st, _ := e.sim.SpriteStats("db"); st.State != "cold" || st.ActiveLinks != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestIdleSleepAndPingActivity(t *testing.T) {
	e := newEnv(t, spritestest.Options{IdleSleep: 300 * time.Millisecond}, sprites.Options{})
	link, err := e.client.Dial(context.Background(), "db", "localhost", 5432)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	// Pings alone keep the sprite awake, as long as something reads the pongs.
	go io.Copy(io.Discard, link)
	for range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := link.Ping(ctx)
		cancel()
		if err != nil {
			t.Fatalf("ping: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, _ := e.sim.SpriteStats("db"); st.State != "running" || st.Sleeps != 0 {
		t.Fatalf("sprite slept under pings: %+v", st)
	}
	// Without pings it falls asleep, and the admin endpoint does not wake it.
	testsvc.Eventually(t, "the sprite to sleep without pings", func() bool {
		st, _ := e.sim.SpriteStats("db")
		return st.State == "cold"
	})
}

func TestLatencyRoundTrip(t *testing.T) {
	const latency = 50 * time.Millisecond
	e := newEnv(t, spritestest.Options{Faults: spritestest.Faults{Latency: latency}}, sprites.Options{})
	link, err := e.client.Dial(context.Background(), "db", "localhost", 5432)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	start := time.Now()
	roundTrip(t, link, "ping")
	// A lower bound only: latency can be added, never removed, by a busy machine.
	if rtt := time.Since(start); rtt < 2*latency {
		t.Errorf("round trip %v, want at least %v", rtt, 2*latency)
	}
}

func TestSpriteCRUD(t *testing.T) {
	e := newEnv(t, spritestest.Options{}, sprites.Options{})
	ctx := context.Background()
	if _, err := e.client.Create(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	list, err := e.client.List(ctx, "")
	if err != nil || len(list) != 2 || list[0].Name != "db" || list[1].Name != "web" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	e.sim.Sleep("web")
	s, err := e.client.Get(ctx, "web")
	if err != nil || s.Status != "cold" {
		t.Fatalf("get = %+v, %v; want the pre-wake status cold", s, err)
	}
	if err := e.client.Delete(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.Get(ctx, "web")
	if !errors.Is(err, sprites.ErrNotFound) || !sprites.IsPermanent(err) {
		t.Fatalf("get after delete: %v", err)
	}
}

// An organization with more sprites than a page holds: List follows the
// pages, and a prefix narrows them.
func TestListFollowsPages(t *testing.T) {
	e := newEnv(t, spritestest.Options{ListPageSize: 3}, sprites.Options{})
	ctx := context.Background()
	for i := range 10 {
		if _, err := e.client.Create(ctx, fmt.Sprintf("web-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		prefix string
		want   int
		pages  int64
	}{
		{"", 11, 4},      // db and ten web-NN
		{"web-0", 10, 4}, // web-00 to web-09
		{"db", 1, 1},
		{"nope", 0, 1},
	} {
		before := e.sim.ListCalls()
		list, err := e.client.List(ctx, tc.prefix)
		if err != nil {
			t.Fatalf("prefix %q: %v", tc.prefix, err)
		}
		names := map[string]bool{}
		for _, s := range list {
			if !strings.HasPrefix(s.Name, tc.prefix) || names[s.Name] {
				t.Errorf("prefix %q: %q listed wrongly or twice", tc.prefix, s.Name)
			}
			names[s.Name] = true
		}
		if len(names) != tc.want {
			t.Errorf("prefix %q: %d sprites, want %d", tc.prefix, len(names), tc.want)
		}
		if got := e.sim.ListCalls() - before; got != tc.pages {
			t.Errorf("prefix %q: %d calls, want %d pages", tc.prefix, got, tc.pages)
		}
	}
}

// An API that hands out the same page without end is an error, not a
// loop.
func TestListStopsOnARepeatedToken(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"sprites":[{"name":"a"}],"has_more":true,"next_continuation_token":"again"}`)
	}))
	t.Cleanup(srv.Close)
	c, err := sprites.New(sprites.Options{APIURL: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	_, err = c.List(context.Background(), "")
	if !errors.Is(err, sprites.ErrProtocol) || !sprites.IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent protocol error", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2: the token repeats on the second page", n)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []sprites.Options{
		{Token: ""},
		{Token: "t", APIURL: "ftp://x"},
		{Token: "t", APIURL: "https://"},
		{Token: "a\nb"},
	} {
		if _, err := sprites.New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func TestDropRateCutsLinks(t *testing.T) {
	e := newEnv(t, spritestest.Options{Faults: spritestest.Faults{DropRate: 50}}, sprites.Options{})
	link, err := e.client.Dial(context.Background(), "db", "localhost", 5432)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, link); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a random drop ended the link cleanly")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drop_rate 50/s never cut the link")
	}
}

func TestColdAfterGoesWarmThenCold(t *testing.T) {
	e := newEnv(t, spritestest.Options{ColdAfter: 200 * time.Millisecond}, sprites.Options{})
	e.sim.Sleep("db")
	if st, _ := e.sim.SpriteStats("db"); st.State != "warm" {
		t.Fatalf("state %q right after sleep, want warm", st.State)
	}
	testsvc.Eventually(t, "the warm sprite to go cold", func() bool {
		st, _ := e.sim.SpriteStats("db")
		return st.State == "cold"
	})
}
