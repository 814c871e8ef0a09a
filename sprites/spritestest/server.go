package spritestest

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
)

// ColdProxy is what a proxy connect sees while its sprite wakes.
type ColdProxy string

const (
	// ColdBlock holds the request before the upgrade until the sprite runs,
	// or answers 503 after MaxWait. This is what the real server's source does.
	ColdBlock ColdProxy = "block"
	// ColdFail answers 503 at once while the sprite wakes.
	ColdFail ColdProxy = "fail"
	// ColdDrop completes the upgrade, then cuts TCP before any reply: the
	// "closed before open" users report on the first connect after hibernation.
	ColdDrop ColdProxy = "drop"
)

// TargetEOF is what a link does when the server inside the sprite closes.
type TargetEOF string

const (
	// EOFKeepOpen sends nothing and keeps the link open (current server).
	EOFKeepOpen TargetEOF = "keep-open"
	// EOFDrop cuts the TCP connection (older server).
	EOFDrop TargetEOF = "drop"
	// EOFClose sends a 1000 close frame.
	EOFClose TargetEOF = "close"
)

// Faults are the behaviours that can change while the server runs.
type Faults struct {
	ColdProxy ColdProxy     `json:"cold_proxy,omitempty"`
	TargetEOF TargetEOF     `json:"target_eof,omitempty"`
	Latency   time.Duration `json:"latency,omitempty"`   // one-way delay per message, both ways
	DropRate  float64       `json:"drop_rate,omitempty"` // chance per second that a given link is cut
}

// Options configures a Server. Zero durations take the real service's values.
type Options struct {
	Token      string        // the only Bearer token accepted; required (see NewToken)
	IdleSleep  time.Duration // sleep after this long without activity; <0 never
	ColdAfter  time.Duration // a sleeping sprite is "warm" this long, then "cold"; 0 means straight to cold
	WakeDelay  time.Duration // how long a wake takes
	MaxWait    time.Duration // how long ColdBlock holds a request before 503
	MaxMessage int64         // largest client message accepted; larger closes with 1009
	// ListPageSize caps a page of the list of sprites below what the
	// client asks for, as a server may: 0 means maxListPageSize.
	ListPageSize int
	// NoQueryInit plays a server that ignores ?host=&port= and waits for
	// the init message, as the API reference describes it.
	NoQueryInit bool
	// LinksKeepAwake plays a server that counts every open proxy
	// WebSocket as activity, waiting links included, as the protocol notes
	// say the real one does; the sprite's idle timer runs only while none
	// is open. Without it, only traffic and pings count.
	LinksKeepAwake bool
	Faults
	Logger *zerolog.Logger
}

// Defaults, matching the real service where it has a value.
const (
	DefaultIdleSleep  = 30 * time.Second
	DefaultWakeDelay  = time.Second
	DefaultMaxWait    = 30 * time.Second
	DefaultMaxMessage = 1 << 20
	// maxServerMessage is the largest message the real server sends.
	maxServerMessage = 32 << 10
)

// Server is a running emulator.
type Server struct {
	// URL is the base URL to give a client, such as http://127.0.0.1:41234.
	URL string

	opts Options
	log  zerolog.Logger

	offline atomic.Bool

	mu         sync.Mutex
	faults     Faults
	stallInits bool // see StallInits
	sprites    map[string]*sprite
	closed     bool

	ln     net.Listener
	http   *http.Server
	stop   chan struct{}
	wg     sync.WaitGroup // janitor, wake timers and link goroutines
	nextID int

	requests atomic.Int64
	lists    atomic.Int64 // GET /v1/sprites: see ListCalls
	// TLS handshakes, when served by StartTLS.
	tlsFull, tlsResumed atomic.Int64
}

type sprite struct {
	name    string
	id      string
	created time.Time
	state   string        // running, warm, cold
	slept   time.Time     // when it went to sleep
	waking  chan struct{} // non-nil while waking; closed when it runs
	wakeT   *time.Timer
	active  time.Time
	// pinged is when a link last got a ping, in unix nanos: activity that
	// the janitor folds into active. A ping cannot take the server's lock,
	// because a cut closes links under it and waits for their readers.
	pinged   atomic.Int64
	ports    map[int]string // port inside the sprite → real address (host:port or unix:/path)
	links    map[*link]struct{}
	inits    map[*websocket.Conn]struct{} // proxy WebSockets still waiting for their init
	execs    int                          // attached exec sessions: they keep the sprite awake
	root     string
	sessions map[*execSession]struct{}
	stats    Stats
}

// Stats are the counters served at GET /_sim/sprites/{name}.
type Stats struct {
	State         string `json:"state"`
	Wakes         int64  `json:"wakes"`
	Sleeps        int64  `json:"sleeps"`
	ProxyConnects int64  `json:"proxy_connects"`
	QueryInits    int64  `json:"query_inits"` // links whose target came from ?host=&port=
	ActiveLinks   int    `json:"active_links"`
	WaitingLinks  int    `json:"waiting_links"` // upgraded, waiting for their init
	BytesIn       int64  `json:"bytes_in"`      // client → sprite
	BytesOut      int64  `json:"bytes_out"`     // sprite → client
	// APICalls counts the requests about this sprite: status, proxy, exec
	// and fs alike; each is activity, and wakes a sleeping sprite. Execs
	// counts the commands started.
	APICalls int64 `json:"api_calls"`
	Execs    int64 `json:"execs"`
}

// New returns an unstarted server; call Serve or Start.
func New(opts Options) *Server {
	if opts.IdleSleep == 0 {
		opts.IdleSleep = DefaultIdleSleep
	}
	if opts.WakeDelay == 0 {
		opts.WakeDelay = DefaultWakeDelay
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.MaxMessage == 0 {
		opts.MaxMessage = DefaultMaxMessage
	}
	if opts.ColdProxy == "" {
		opts.ColdProxy = ColdBlock
	}
	if opts.TargetEOF == "" {
		opts.TargetEOF = EOFKeepOpen
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	s := &Server{opts: opts, log: log, faults: opts.Faults, sprites: map[string]*sprite{}, stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sprites", s.auth(s.handleList))
	mux.HandleFunc("POST /v1/sprites", s.auth(s.handleCreate))
	mux.HandleFunc("GET /v1/sprites/{name}", s.auth(s.withSprite(s.handleGet)))
	mux.HandleFunc("PUT /v1/sprites/{name}", s.auth(s.withSprite(s.handleGet)))
	mux.HandleFunc("DELETE /v1/sprites/{name}", s.auth(s.handleDelete))
	mux.HandleFunc("GET /v1/sprites/{name}/proxy", s.auth(s.withSprite(s.handleProxy)))
	mux.HandleFunc("GET /v1/sprites/{name}/exec", s.auth(s.withSprite(s.handleExec)))
	mux.HandleFunc("PUT /v1/sprites/{name}/fs/write", s.auth(s.withSprite(s.handleFSWrite)))
	mux.HandleFunc("POST /v1/sprites/{name}/fs/write", s.auth(s.withSprite(s.handleFSWrite)))
	mux.HandleFunc("GET /v1/sprites/{name}/fs/read", s.auth(s.withSprite(s.handleFSRead)))
	mux.HandleFunc("GET /v1/sprites/{name}/fs/list", s.auth(s.withSprite(s.handleFSList)))
	mux.HandleFunc("POST /_sim/sprites/{name}/sleep", s.auth(s.admin(s.Sleep)))
	mux.HandleFunc("POST /_sim/sprites/{name}/drop-links", s.auth(s.admin(s.DropLinks)))
	mux.HandleFunc("GET /_sim/sprites/{name}", s.auth(s.handleSimStats))
	mux.HandleFunc("GET /_sim/tls", s.auth(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.TLSHandshakes()) }))
	mux.HandleFunc("POST /_sim/faults", s.auth(s.handleFaults))
	mux.HandleFunc("POST /_sim/offline", s.auth(s.handleOffline))
	s.http = &http.Server{Handler: s.offlineGate(mux), ReadHeaderTimeout: 10 * time.Second}
	return s
}

// SetOffline takes the API off the network, or puts it back: while
// offline, every API request's connection is dropped unanswered, as when
// the laptop's Wi-Fi is down, and going offline cuts every link. The admin
// endpoints stay reachable.
func (s *Server) SetOffline(off bool) {
	s.offline.Store(off)
	if off {
		s.mu.Lock()
		for _, sp := range s.sprites {
			s.cutLinksLocked(sp)
		}
		s.mu.Unlock()
	}
}

func (s *Server) offlineGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.offline.Load() && strings.HasPrefix(r.URL.Path, "/v1/") {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			http.Error(w, "offline", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) handleOffline(w http.ResponseWriter, r *http.Request) {
	on, err := strconv.ParseBool(r.URL.Query().Get("on"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", "on: want true or false")
		return
	}
	s.SetOffline(on)
	writeJSON(w, http.StatusOK, map[string]any{"offline": on})
}

// NewServer starts a server on a loopback port, like httptest.NewServer.
func NewServer(opts Options) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("spritestest: listen: %v", err))
	}
	s := New(opts)
	s.Start(ln)
	return s
}

// Start serves on ln in the background and sets URL.
func (s *Server) Start(ln net.Listener) {
	s.ln = ln
	s.URL = "http://" + ln.Addr().String()
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		s.portViews()
	}()
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("emulator stopped serving")
		}
	}()
	go func() {
		defer s.wg.Done()
		s.janitor()
	}()
}

// Close stops the server and cuts every link.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.stop)
	var roots []string
	for _, sp := range s.sprites {
		s.cutLinksLocked(sp)
		s.killSessionsLocked(sp)
		if sp.wakeT != nil && sp.wakeT.Stop() {
			s.wg.Done()
		}
		if sp.root != "" {
			roots = append(roots, sp.root)
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.http.Shutdown(ctx)
	s.wg.Wait()
	for _, r := range roots {
		os.RemoveAll(r)
	}
}

// Map routes port inside sprite to target, a real address on this machine
// ("127.0.0.1:5432" or "unix:/path/to/socket"), creating the sprite if needed.
func (s *Server) Map(name string, port int, target string) {
	s.mu.Lock()
	sp := s.createLocked(name)
	sp.ports[port] = target
	s.mu.Unlock()
	s.refreshTables(sp)
}

// CreateSprite adds a running sprite with no ports.
func (s *Server) CreateSprite(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.createLocked(name)
}

func (s *Server) createLocked(name string) *sprite {
	if sp, ok := s.sprites[name]; ok {
		return sp
	}
	s.nextID++
	now := time.Now()
	sp := &sprite{
		name: name, id: fmt.Sprintf("sprite-%04d", s.nextID), created: now,
		state: "running", active: now, ports: map[int]string{}, links: map[*link]struct{}{},
		inits: map[*websocket.Conn]struct{}{}, sessions: map[*execSession]struct{}{},
	}
	s.sprites[name] = sp
	return sp
}

// SetFaults replaces the faults that are set (non-zero) in f.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.ColdProxy != "" {
		s.faults.ColdProxy = f.ColdProxy
	}
	if f.TargetEOF != "" {
		s.faults.TargetEOF = f.TargetEOF
	}
	if f.Latency >= 0 {
		s.faults.Latency = f.Latency
	}
	if f.DropRate >= 0 {
		s.faults.DropRate = f.DropRate
	}
}

// StallInits makes the server read each init message and then do nothing:
// no dial, no answer, no close, as a server end that is gone behind an
// edge that still answers pings. Links with their target in the query
// are not affected.
func (s *Server) StallInits(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stallInits = on
}

func (s *Server) currentFaults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Sleep puts a sprite to sleep now, cutting its links.
func (s *Server) Sleep(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.sprites[name]
	if !ok {
		return fmt.Errorf("no sprite %q", name)
	}
	s.sleepLocked(sp, time.Now())
	return nil
}

// DropLinks cuts every proxy link into a sprite at the TCP level.
func (s *Server) DropLinks(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.sprites[name]
	if !ok {
		return fmt.Errorf("no sprite %q", name)
	}
	s.cutLinksLocked(sp)
	return nil
}

// Blackhole makes every proxy link into a sprite silent: what either end
// sends vanishes, and neither is told, as over a path that died without a
// word (a laptop that slept, a NAT that forgot the connection). Links made
// later are not affected.
func (s *Server) Blackhole(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.sprites[name]
	if !ok {
		return fmt.Errorf("no sprite %q", name)
	}
	for l := range sp.links {
		l.hole.Store(true)
	}
	return nil
}

// SpriteStats returns a sprite's counters without counting as activity.
func (s *Server) SpriteStats(name string) (Stats, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.sprites[name]
	if !ok {
		return Stats{}, false
	}
	st := sp.stats
	st.State = sp.state
	st.ActiveLinks = len(sp.links)
	st.WaitingLinks = len(sp.inits)
	return st, true
}

func (s *Server) sleepLocked(sp *sprite, now time.Time) {
	if sp.state != "running" {
		return
	}
	if s.opts.ColdAfter > 0 {
		sp.state = "warm"
	} else {
		sp.state = "cold"
	}
	sp.slept = now
	sp.stats.Sleeps++
	s.cutLinksLocked(sp)
	s.freezeLocked(sp)
	s.log.Info().Str("sprite", sp.name).Str("state", sp.state).Msg("sprite fell asleep")
}

func (s *Server) cutLinksLocked(sp *sprite) {
	for l := range sp.links {
		l.cut()
		delete(sp.links, l)
	}
	for ws := range sp.inits {
		_ = ws.CloseNow()
		delete(sp.inits, ws)
	}
}

// touchLocked records activity. It wakes a sleeping sprite and returns the
// channel that closes when the sprite runs, or nil if it runs already.
func (s *Server) touchLocked(sp *sprite) chan struct{} {
	if sp.state == "running" {
		sp.active = time.Now()
		return nil
	}
	if sp.waking == nil {
		sp.waking = make(chan struct{})
		sp.stats.Wakes++
		s.log.Info().Str("sprite", sp.name).Str("from", sp.state).Msg("sprite waking")
		s.wg.Add(1)
		sp.wakeT = time.AfterFunc(s.opts.WakeDelay, func() {
			defer s.wg.Done()
			s.mu.Lock()
			defer s.mu.Unlock()
			sp.state = "running"
			sp.active = time.Now()
			s.thawLocked(sp)
			close(sp.waking)
			sp.waking, sp.wakeT = nil, nil
			s.log.Info().Str("sprite", sp.name).Msg("sprite running")
		})
	}
	return sp.waking
}

func (s *Server) touch(sp *sprite) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.touchLocked(sp)
}

// janitor puts idle sprites to sleep, ages warm ones to cold and applies the
// random drop rate.
func (s *Server) janitor() {
	period := s.opts.IdleSleep / 10
	period = min(max(period, 10*time.Millisecond), time.Second)
	if s.opts.IdleSleep < 0 {
		period = 100 * time.Millisecond
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			for _, sp := range s.sprites {
				if p := time.Unix(0, sp.pinged.Load()); sp.state == "running" && p.After(sp.active) {
					sp.active = p
				}
				if s.opts.LinksKeepAwake && sp.state == "running" && len(sp.links)+len(sp.inits) > 0 {
					sp.active = now
				}
				switch {
				case sp.state == "running" && s.opts.IdleSleep > 0 && sp.execs == 0 && now.Sub(sp.active) >= s.opts.IdleSleep:
					s.sleepLocked(sp, now)
				case sp.state == "warm" && sp.waking == nil && now.Sub(sp.slept) >= s.opts.ColdAfter:
					sp.state = "cold"
				}
				if p := s.faults.DropRate * period.Seconds(); p > 0 {
					for l := range sp.links {
						if rand.Float64() < p {
							l.cut()
							delete(sp.links, l)
						}
					}
				}
			}
			s.mu.Unlock()
		}
	}
}

// --- HTTP plumbing ---

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": code, "message": msg})
}

// Requests counts every request the server received, rejected ones included.
func (s *Server) Requests() int64 { return s.requests.Load() }

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/_sim/") {
			s.requests.Add(1)
		}
		// Constant time: exec runs commands on this machine, so the token
		// must not leak a byte at a time through response timing.
		got := []byte(r.Header.Get("Authorization"))
		if s.opts.Token == "" || subtle.ConstantTimeCompare(got, []byte("Bearer "+s.opts.Token)) != 1 {
			// Plain text, verbatim from the in-sprite server; the public
			// edge may answer in JSON, and the client reads either.
			http.Error(w, "Missing or invalid authentication", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

type spriteHandler func(http.ResponseWriter, *http.Request, *sprite)

func (s *Server) withSprite(h spriteHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		sp := s.sprites[r.PathValue("name")]
		if sp != nil {
			sp.stats.APICalls++
		}
		s.mu.Unlock()
		if sp == nil {
			apiError(w, http.StatusNotFound, "not_found", fmt.Sprintf("sprite %q not found", r.PathValue("name")))
			return
		}
		h(w, r, sp)
	}
}

func (s *Server) admin(act func(string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := act(r.PathValue("name")); err != nil {
			apiError(w, http.StatusNotFound, "not_found", err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *Server) handleSimStats(w http.ResponseWriter, r *http.Request) {
	st, ok := s.SpriteStats(r.PathValue("name"))
	if !ok {
		apiError(w, http.StatusNotFound, "not_found", "no such sprite")
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handleFaults(w http.ResponseWriter, r *http.Request) {
	var f struct {
		ColdProxy ColdProxy `json:"cold_proxy"`
		TargetEOF TargetEOF `json:"target_eof"`
		Latency   *string   `json:"latency"`
		DropRate  *float64  `json:"drop_rate"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&f); err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	nf := Faults{ColdProxy: f.ColdProxy, TargetEOF: f.TargetEOF, Latency: -1, DropRate: -1}
	if f.Latency != nil {
		d, err := time.ParseDuration(*f.Latency)
		if err != nil || d < 0 {
			apiError(w, http.StatusBadRequest, "bad_request", "latency: want a duration such as 50ms")
			return
		}
		nf.Latency = d
	}
	if f.DropRate != nil {
		nf.DropRate = *f.DropRate
	}
	switch nf.ColdProxy {
	case "", ColdBlock, ColdFail, ColdDrop:
	default:
		apiError(w, http.StatusBadRequest, "bad_request", "cold_proxy: want block, fail or drop")
		return
	}
	switch nf.TargetEOF {
	case "", EOFKeepOpen, EOFDrop, EOFClose:
	default:
		apiError(w, http.StatusBadRequest, "bad_request", "target_eof: want keep-open, drop or close")
		return
	}
	s.SetFaults(nf)
	w.WriteHeader(http.StatusNoContent)
}

type spriteJSON struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Status       string    `json:"status"`
	URL          string    `json:"url"`
	Organization string    `json:"organization"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func (s *Server) viewLocked(sp *sprite) spriteJSON {
	return spriteJSON{
		ID: sp.id, Name: sp.name, Status: sp.state, URL: "https://" + sp.name + ".sprites.app",
		Organization: "emulator", CreatedAt: sp.created, UpdatedAt: sp.active,
	}
}

// The list of sprites comes in pages, as the official SDK expects: of
// listPageSize sprites, or max_results when the client asks, and never
// more than Options.ListPageSize.
const (
	listPageSize    = 50
	maxListPageSize = 1000
)

// ListCalls counts the requests for the list of sprites, which is about
// no sprite: it wakes none and counts in no sprite's APICalls.
func (s *Server) ListCalls() int64 { return s.lists.Load() }

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	s.lists.Add(1)
	q := r.URL.Query()
	size := listPageSize
	if v := q.Get("max_results"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListPageSize {
			apiError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("max_results must be 1 to %d", maxListPageSize))
			return
		}
		size = n
	}
	if s.opts.ListPageSize > 0 {
		size = min(size, s.opts.ListPageSize)
	}
	// The token is opaque to clients: here, the last name of the page
	// before, which a page resumes after.
	after := ""
	if v := q.Get("continuation_token"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil {
			apiError(w, http.StatusBadRequest, "bad_request", "invalid continuation_token")
			return
		}
		after = string(b)
	}
	prefix := q.Get("prefix")
	s.mu.Lock()
	out := []spriteJSON{}
	for _, sp := range s.sprites {
		if strings.HasPrefix(sp.name, prefix) && sp.name > after {
			out = append(out, s.viewLocked(sp))
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	page := map[string]any{"sprites": out, "has_more": false}
	if len(out) > size {
		page["sprites"] = out[:size]
		page["has_more"] = true
		page["next_continuation_token"] = base64.RawURLEncoding.EncodeToString([]byte(out[size-1].Name))
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&in); err != nil || in.Name == "" {
		apiError(w, http.StatusBadRequest, "bad_request", "body must be {\"name\": \"...\"}")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sprites[in.Name]; ok {
		apiError(w, http.StatusConflict, "already_exists", fmt.Sprintf("sprite %q exists", in.Name))
		return
	}
	writeJSON(w, http.StatusCreated, s.viewLocked(s.createLocked(in.Name)))
}

// handleGet answers with the state before this call, which wakes the
// sprite: the reference says any API call wakes a sleeping sprite, and
// names no call about one sprite that does not. The list (GET /v1/sprites)
// touches none.
func (s *Server) handleGet(w http.ResponseWriter, r *http.Request, sp *sprite) {
	s.mu.Lock()
	view := s.viewLocked(sp)
	s.touchLocked(sp)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, view)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.sprites[r.PathValue("name")]
	if !ok {
		apiError(w, http.StatusNotFound, "not_found", "no such sprite")
		return
	}
	s.cutLinksLocked(sp)
	s.killSessionsLocked(sp)
	delete(s.sprites, sp.name)
	w.WriteHeader(http.StatusNoContent)
}

// ParseMap parses a --map value, NAME:PORT=HOST:PORT (or NAME:PORT=unix:/path).
func ParseMap(v string) (name string, port int, target string, err error) {
	left, target, ok := strings.Cut(v, "=")
	if !ok || target == "" {
		return "", 0, "", fmt.Errorf("map %q: want NAME:PORT=HOST:PORT", v)
	}
	name, ps, ok := strings.Cut(left, ":")
	if !ok || name == "" {
		return "", 0, "", fmt.Errorf("map %q: want NAME:PORT=HOST:PORT", v)
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, "", fmt.Errorf("map %q: port %q is not 1-65535", v, ps)
	}
	if !strings.HasPrefix(target, "unix:") {
		if _, _, err := net.SplitHostPort(target); err != nil {
			return "", 0, "", fmt.Errorf("map %q: target: %v", v, err)
		}
	}
	return name, port, target, nil
}
