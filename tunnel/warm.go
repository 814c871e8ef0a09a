package tunnel

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/sprites"
)

// spareLink is a proxy link upgraded ahead of need, waiting for its target
// (a *sprites.Spare, through spriteSpare).
type spareLink interface {
	Ping(ctx context.Context) error
	RTT() time.Duration
	Setup() time.Duration
	LastSeen() time.Time
	Dead() bool
	Start(host string, port int) (directLink, error)
	CloseNow() error
}

// directLink is what a direct-mode connection relays over: a proxy link,
// connected or on its way (*sprites.Link).
type directLink interface {
	Remote
	Pinger
	Connected(ctx context.Context) error
	Target() string
}

// spriteSpare adapts *sprites.Spare to spareLink.
type spriteSpare struct{ *sprites.Spare }

func (s spriteSpare) Start(host string, port int) (directLink, error) {
	l, err := s.Spare.Start(host, port)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// warmSettings says how a sprite's spare links are kept.
type warmSettings struct {
	size   int           // spares kept while the sprite is in use
	linger time.Duration // how long they outlive its last connection
	ping   time.Duration // how often each is pinged
}

// Bounds on how long a connection begun on a spare waits for "connected"
// before it races a fresh dial: a few round trips, as the spares' pings
// measure them, plus room for the server's dial inside the sprite.
const (
	fallbackRTTs    = 4
	fallbackSlack   = 200 * time.Millisecond
	fallbackUnknown = time.Second
	fallbackMax     = 5 * time.Second
	// warmPing is how often spares are pinged at most (keepalive, if
	// shorter): a spare that missed two pings is not handed out.
	warmPing = 5 * time.Second
	// maxReplay bounds what a connection keeps of its first bytes for a
	// replay; past it, its writes wait for "connected".
	maxReplay = 64 << 10
)

// warmPool keeps one sprite's spare links: only while a direct-mode
// connection to the sprite is open and for linger after the last one, and
// only once a link has reached the sprite since it was last seen to fail,
// so that spares never wake a sprite or keep an idle one awake. Each spare
// is pinged, and one that has not answered lately is not handed out.
type warmPool struct {
	sprite string
	set    warmSettings
	dial   func(context.Context) (spareLink, error)
	log    zerolog.Logger

	ctx    context.Context // the pool's life; dials use it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	spares  []spareLink
	dialing int
	users   int         // open connections
	holding bool        // users, or within linger of the last
	linger  *time.Timer // ends holding
	gen     int         // counts acquires: a linger armed before one is void
	running bool        // a link reached the sprite since a failure
	pinging bool        // the ping loop runs
	rtt     time.Duration
	closed  bool
}

func newWarmPool(sprite string, set warmSettings, dial func(context.Context) (spareLink, error), log zerolog.Logger) *warmPool {
	ctx, cancel := context.WithCancel(context.Background())
	return &warmPool{sprite: sprite, set: set, dial: dial, log: log, ctx: ctx, cancel: cancel}
}

// acquire marks a direct-mode connection to the sprite open.
func (p *warmPool) acquire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users++
	p.gen++
	p.holding = true
	if p.linger != nil {
		p.linger.Stop()
		p.linger = nil
	}
}

// release marks one closed; after the last, the spares go once linger ends.
func (p *warmPool) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users--
	if p.users > 0 || p.closed {
		return
	}
	if p.linger != nil {
		p.linger.Stop()
	}
	gen := p.gen
	p.linger = time.AfterFunc(p.set.linger, func() { p.expire(gen) })
}

// expire ends the linger armed at gen, unless an acquire came since: its
// timer may have fired just as that acquire and its release ran.
func (p *warmPool) expire(gen int) {
	p.mu.Lock()
	if p.users > 0 || p.closed || gen != p.gen {
		p.mu.Unlock()
		return
	}
	// What was known of the sprite goes stale while it idles: it may
	// sleep now, and the next connection must reach it before spares do.
	p.holding, p.linger, p.running = false, nil, false
	drop := p.spares
	p.spares = nil
	p.mu.Unlock()
	for _, s := range drop {
		s.CloseNow()
	}
	if len(drop) > 0 {
		p.log.Debug().Int("spares", len(drop)).Msg("spare links closed: the sprite is idle")
	}
}

// failed says a spare failed as it was used: the sprite may have gone to
// sleep, so no more are dialled until a link gets through.
func (p *warmPool) failed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running = false
}

// connected says a link reached the sprite: it runs, and spares may be
// dialled while it is in use.
func (p *warmPool) connected() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running = true
	p.fillLocked()
}

// take hands out a spare that answered lately, or nil. It starts a
// replacement.
func (p *warmPool) take() spareLink {
	p.mu.Lock()
	defer p.mu.Unlock()
	fresh := p.freshLocked()
	var got spareLink
	for i := len(p.spares) - 1; i >= 0; i-- {
		s := p.spares[i]
		if s.Dead() {
			p.dropLocked(i)
			p.running = false // a sleep cuts spares too: wait for a real link
			continue
		}
		if got == nil && time.Since(s.LastSeen()) <= fresh {
			got = s
			p.spares = append(p.spares[:i], p.spares[i+1:]...)
		}
	}
	p.fillLocked()
	return got
}

// freshLocked is how recently a spare must have answered to be handed out:
// within two pings, so one lost pong does not disqualify it.
func (p *warmPool) freshLocked() time.Duration { return 2*p.set.ping + p.rtt }

func (p *warmPool) dropLocked(i int) {
	p.spares[i].CloseNow()
	p.spares = append(p.spares[:i], p.spares[i+1:]...)
}

// fallbackAfter is how long a connection begun on a spare waits for
// "connected" before it races a fresh dial.
func (p *warmPool) fallbackAfter() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rtt == 0 {
		return fallbackUnknown
	}
	return min(fallbackRTTs*p.rtt+fallbackSlack, fallbackMax)
}

// count is how many spares the pool holds now.
func (p *warmPool) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.spares)
}

func (p *warmPool) fillLocked() {
	if p.closed || p.users == 0 || !p.running {
		return
	}
	for ; len(p.spares)+p.dialing < p.set.size; p.dialing++ {
		p.wg.Add(1)
		go p.dialOne()
	}
	if !p.pinging && p.set.ping > 0 {
		p.pinging = true
		p.wg.Add(1)
		go p.pingLoop()
	}
}

// dialOne adds a spare. A spare just upgraded has answered, so it is
// usable at once; its first ping, beside it, measures the round trip.
func (p *warmPool) dialOne() {
	defer p.wg.Done()
	s, err := p.dial(p.ctx)
	p.mu.Lock()
	p.dialing--
	if err != nil {
		// Perhaps asleep: no more spares until a real link gets through.
		p.running = false
		if p.ctx.Err() == nil {
			p.log.Debug().Err(err).Msg("spare link failed; none until a connection reaches the sprite")
		}
		p.mu.Unlock()
		return
	}
	if p.closed || !p.holding {
		p.mu.Unlock()
		s.CloseNow()
		return
	}
	p.spares = append(p.spares, s)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.ctx, max(p.set.ping, time.Second))
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		p.drop(s)
		return
	}
	p.mu.Lock()
	// The edge may answer pings nearer than the sprite; the upgrade went
	// all the way, in about three round trips (TCP, TLS, the upgrade).
	p.noteRTTLocked(max(s.RTT(), s.Setup()/3))
	p.mu.Unlock()
}

// drop removes s, which failed a ping, if the pool still holds it: the
// sprite may be asleep, so no more spares until a link gets through.
func (p *warmPool) drop(s spareLink) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, held := range p.spares {
		if held == s {
			p.dropLocked(i)
			p.running = false
			return
		}
	}
}

func (p *warmPool) noteRTTLocked(rtt time.Duration) {
	if rtt <= 0 {
		return
	}
	if p.rtt == 0 {
		p.rtt = rtt
	} else {
		p.rtt = (7*p.rtt + rtt) / 8 // as TCP smooths its round trip
	}
}

// pingLoop pings every spare each interval, and drops those that do not
// answer within it. It ends when the pool holds nothing.
func (p *warmPool) pingLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.set.ping)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		if !p.holding && len(p.spares) == 0 && p.dialing == 0 {
			p.pinging = false
			p.mu.Unlock()
			return
		}
		spares := append([]spareLink(nil), p.spares...)
		p.mu.Unlock()
		var wg sync.WaitGroup
		failed := make([]bool, len(spares))
		for i, s := range spares {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(p.ctx, p.set.ping)
				defer cancel()
				failed[i] = s.Ping(ctx) != nil
			})
		}
		wg.Wait()
		for i, s := range spares {
			if failed[i] {
				p.drop(s)
			}
		}
		p.mu.Lock()
		for i, s := range spares {
			if !failed[i] {
				p.noteRTTLocked(s.RTT())
			}
		}
		p.mu.Unlock()
	}
}

// close drops every spare and stops the pool for good.
func (p *warmPool) close() {
	p.mu.Lock()
	p.closed = true
	if p.linger != nil {
		p.linger.Stop()
	}
	drop := p.spares
	p.spares = nil
	p.mu.Unlock()
	p.cancel()
	for _, s := range drop {
		s.CloseNow()
	}
	p.wg.Wait()
}

// warmPools is the spare links of every sprite, for one client: a reload
// makes a new client and new pools.
type warmPools struct {
	set  warmSettings
	dial func(ctx context.Context, sprite string) (spareLink, error)
	log  zerolog.Logger

	mu     sync.Mutex
	pools  map[string]*warmPool
	closed bool
}

func newWarmPools(client *sprites.Client, set warmSettings, log zerolog.Logger) *warmPools {
	return &warmPools{set: set, log: log, pools: map[string]*warmPool{},
		dial: func(ctx context.Context, sprite string) (spareLink, error) {
			s, err := client.DialSpare(ctx, sprite)
			if err != nil {
				return nil, err
			}
			return spriteSpare{s}, nil
		}}
}

// get returns sprite's pool, or nil when spares are off.
func (w *warmPools) get(sprite string) *warmPool {
	if w == nil || w.set.size == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	p, ok := w.pools[sprite]
	if !ok {
		p = newWarmPool(sprite, w.set, func(ctx context.Context) (spareLink, error) { return w.dial(ctx, sprite) },
			w.log.With().Str("sprite", sprite).Logger())
		w.pools[sprite] = p
	}
	return p
}

// count is how many spares sprite has now.
func (w *warmPools) count(sprite string) int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	p := w.pools[sprite]
	w.mu.Unlock()
	if p == nil {
		return 0
	}
	return p.count()
}

func (w *warmPools) close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.closed = true
	pools := w.pools
	w.pools = nil
	w.mu.Unlock()
	for _, p := range pools {
		p.close()
	}
}
