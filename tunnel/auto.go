package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/procnet"
)

// Auto-forward's limits (the README's Auto-forward section states them).
const (
	// MaxAutoPorts bounds one sprite's auto-forwards: each is a listener,
	// and a sprite that listens on thousands of ports gets the lowest.
	MaxAutoPorts = 256
	// autoPoll is how often direct mode reads the sprite's tables while a
	// connection to the sprite is open: one short exec.
	autoPoll = 2 * time.Second
	// withdrawAfter is how long a port must be gone before its listener
	// is withdrawn; each return within flapWindow of a withdrawal doubles
	// it, up to maxWithdrawAfter, so a flapping port keeps its listener
	// instead of churning it and the state file.
	withdrawAfter    = 3 * time.Second
	maxWithdrawAfter = 2 * time.Minute
	flapWindow       = time.Minute
	// localProbe is how many local ports after the wanted one are tried
	// before any free port is taken.
	localProbe = 16
	// maxTablesOutput bounds what the direct-mode exec may print:
	// procnet.MaxListeners lines and more.
	maxTablesOutput = 4 << 20
	// autoRetry spaces direct-mode reads after one failed.
	autoRetry = 30 * time.Second
	// DefaultAutoListEvery is how often a sprite that no connection is
	// looking at is checked in the list of sprites, which wakes none.
	DefaultAutoListEvery = 15 * time.Second
	// lookSpacing parts two looks at a sprite found running in the list.
	// A look is an exec, and an exec is activity: spaced wider than the
	// service's idle timer (about 30 s), looks can delay a sleep by one
	// idle period at most, and never keep a sprite awake.
	lookSpacing = 45 * time.Second
)

// tablesCmd prints the sprite's TCP tables. $SPRITEFWD_PROC_NET is the
// emulator's: its sprites share the test machine's network, so it keeps
// each sprite's tables in a file; a real sprite has no such variable.
var tablesCmd = []string{"sh", "-c", `d="${SPRITEFWD_PROC_NET:-/proc/net}"; cat "$d/tcp" "$d/tcp6" 2>/dev/null; true`}

// Discovered marks a forward that auto-forward made, in status.
type Discovered struct {
	Process string    `json:"process,omitempty"` // the command's name, when the agent could see it
	PID     int       `json:"pid,omitempty"`
	Since   time.Time `json:"since"`
}

// autoPort is one port a sprite listens on, or listened on: a withdrawn
// one keeps its local port, so that it gets the same one back.
type autoPort struct {
	port, local int
	name        string
	pid         int
	fwd         *forward // nil while withdrawn
	since       time.Time
	goneSince   time.Time // the last report without it, while fwd is up
	withdrawnAt time.Time
	flaps       int
	logged      bool // its discovery was logged: a return is logged at debug
}

// autoSprite runs one sprite's auto-forwards: it turns reports of the
// sprite's listening ports into listeners, remembers them on disk, and
// withdraws those whose server stopped. Reports come from the agent's
// watch (mux) or from a short exec while a connection is open (direct):
// never from a call that would wake the sprite or keep it awake.
type autoSprite struct {
	d      *Daemon
	sprite string
	dir    string
	waker  *Waker
	log    zerolog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	kick   chan struct{}
	wg     sync.WaitGroup

	mu        sync.Mutex
	set       config.SpriteSettings
	agentPort int
	static    map[int]bool // ports that a configured forward reaches
	ports     map[int]*autoPort
	active    int // direct: connections up to the sprite
	watching  int // mux: agent sessions whose port watch runs
	lastLook  time.Time
	polling   bool
	looking   bool // lookOnce's read runs
	readErrAt time.Time
	overLimit bool
	noWatch   bool
	closed    bool
}

func newAutoSprite(d *Daemon, sprite string, set config.SpriteSettings, agentPort int, static map[int]bool) *autoSprite {
	ctx, cancel := context.WithCancel(context.Background())
	a := &autoSprite{
		d: d, sprite: sprite, dir: d.hooks.StateDir, waker: d.waker(sprite), ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		log: d.log.With().Str("sprite", sprite).Str("auto_forward", "on").Logger(),
		set: set, agentPort: agentPort, static: static, ports: map[int]*autoPort{},
	}
	st, err := loadAutoState(a.dir, sprite)
	if err != nil {
		a.log.Warn().Err(err).Str("file", stateFile(a.dir, sprite)).Msg("auto-forward state unreadable; starting with no known ports, and overwriting it at the first change")
	}
	now := d.clock.Now()
	a.mu.Lock()
	for _, sp := range st.Ports {
		p := &autoPort{port: sp.Port, local: sp.Local, name: sp.Name, since: now}
		a.ports[sp.Port] = p
		if sp.Active && a.allowedLocked(sp.Port) {
			// Up while the sprite sleeps: a connection wakes it, as on
			// any forward. A report without the port withdraws it.
			a.startLocked(p, now)
			p.goneSince = time.Time{}
		}
	}
	a.mu.Unlock()
	a.wg.Add(1)
	go a.loop()
	return a
}

// allowedLocked applies only, exclude, and the defaults: no port below
// 1024 nor the agent's unless only names it, none a forward covers.
func (a *autoSprite) allowedLocked(port int) bool {
	au := a.set.Auto
	switch {
	case a.static[port], au.Exclude.Contains(port):
		return false
	case len(au.Only) > 0:
		return au.Only.Contains(port)
	}
	return port >= 1024 && port != a.agentPort
}

// report takes the sprite's whole list of listening ports.
func (a *autoSprite) report(l mux.PortList) {
	now := a.d.clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.lastLook = now
	ports := append([]mux.ListeningPort(nil), l.Ports...)
	sort.Slice(ports, func(i, j int) bool { return ports[i].Port < ports[j].Port })
	seen := map[int]mux.ListeningPort{}
	over := l.Truncated
	for _, lp := range ports {
		if _, dup := seen[lp.Port]; dup || !a.allowedLocked(lp.Port) {
			continue
		}
		if len(seen) == MaxAutoPorts {
			over = true
			break
		}
		seen[lp.Port] = lp
	}
	if over && !a.overLimit {
		a.log.Warn().Int("listed", len(l.Ports)).Int("limit", MaxAutoPorts).Msgf("sprite %s listens on more ports than auto-forward takes; forwarding the lowest %d (narrow it with only: or exclude:)", a.sprite, MaxAutoPorts)
	}
	a.overLimit = over
	changed := false
	for port, lp := range seen {
		p := a.ports[port]
		if p == nil {
			if len(a.ports) >= maxKnownPorts && !a.forgetOneLocked() {
				continue
			}
			p = &autoPort{port: port}
			a.ports[port] = p
		}
		if lp.Name != "" {
			p.name, p.pid = lp.Name, lp.PID
		}
		p.goneSince = time.Time{}
		if p.fwd == nil {
			if !p.withdrawnAt.IsZero() && now.Sub(p.withdrawnAt) < flapWindow {
				p.flaps++
			}
			a.startLocked(p, now)
			changed = true
		} else {
			p.fwd.discovered.Store(&Discovered{Process: p.name, PID: p.pid, Since: p.since})
		}
	}
	for port, p := range a.ports {
		if _, ok := seen[port]; !ok && p.fwd != nil && p.goneSince.IsZero() {
			p.goneSince = now
		}
	}
	if changed {
		a.saveLocked()
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// forgetOneLocked drops the longest-withdrawn port to make room.
func (a *autoSprite) forgetOneLocked() bool {
	var old *autoPort
	for _, p := range a.ports {
		if p.fwd == nil && (old == nil || p.withdrawnAt.Before(old.withdrawnAt)) {
			old = p
		}
	}
	if old == nil {
		return false
	}
	delete(a.ports, old.port)
	return true
}

// startLocked binds a listener for p: its local port from before, else
// the same number as in the sprite, else one of the next few, else any.
func (a *autoSprite) startLocked(p *autoPort, now time.Time) {
	want := p.local
	if want == 0 {
		want = p.port
	}
	host := a.set.Auto.Listen
	rule := config.Forward{
		Name: "auto:" + a.sprite + ":" + strconv.Itoa(p.port), Sprite: a.sprite, Port: p.port,
		Host: a.set.Host, KeepAwake: a.set.KeepAwake, Mode: a.set.Mode, AllowPublic: true,
		MaxConnections: config.DefaultMaxConnections,
	}
	var firstErr error
	for i := 0; i <= localProbe+1; i++ {
		local := want + i
		if i == localProbe+1 || local > 65535 {
			local = 0
		}
		rule.Listen = net.JoinHostPort(host, strconv.Itoa(local))
		f := newForward(a.d, rule, a.waker)
		f.discovered.Store(&Discovered{Process: p.name, PID: p.pid, Since: now})
		if err := f.bind(); err != nil {
			f.cancel()
			if firstErr == nil {
				firstErr = err
			}
			if local == 0 {
				break
			}
			continue
		}
		if f.rule.KeepAwake == config.Always {
			f.wg.Add(1)
			go f.keepAwake()
		}
		_, lp, _ := net.SplitHostPort(f.addrs()[0])
		p.local, _ = strconv.Atoi(lp)
		p.fwd, p.since = f, now
		ev := a.log.Info()
		if p.logged {
			ev = a.log.Debug()
		}
		p.logged = true
		ev = ev.Int("port", p.port).Strs("addrs", f.addrs()).Str("process", p.name)
		if local != want {
			ev = ev.AnErr("wanted", firstErr)
		}
		ev.Msgf("auto-forward: sprite %s port %d on %s", a.sprite, p.port, f.addrs()[0])
		return
	}
	a.log.Warn().Err(firstErr).Int("port", p.port).Msg("auto-forward: no local port to listen on; trying again at the next report")
}

// withdrawDelay is how long p must be gone before it is withdrawn.
func (p *autoPort) withdrawDelay() time.Duration {
	d := withdrawAfter << min(p.flaps, 6)
	return min(d, maxWithdrawAfter)
}

// checkLocked withdraws the ports gone long enough whose connections have
// ended, and returns how long until the next one is due (0: none).
func (a *autoSprite) checkLocked(now time.Time) time.Duration {
	var next time.Duration
	changed := false
	for _, p := range a.ports {
		if p.fwd == nil || p.goneSince.IsZero() {
			continue
		}
		due := p.goneSince.Add(p.withdrawDelay()).Sub(now)
		if due <= 0 && p.fwd.stats.Open.Load()+p.fwd.stats.Lingering.Load() == 0 {
			a.withdrawLocked(p, now)
			changed = true
			continue
		}
		if due <= 0 {
			due = time.Second // its connections are still open
		}
		if next == 0 || due < next {
			next = due
		}
	}
	if changed {
		a.saveLocked()
	}
	return next
}

func (a *autoSprite) withdrawLocked(p *autoPort, now time.Time) {
	f := p.fwd
	p.fwd, p.goneSince, p.withdrawnAt = nil, time.Time{}, now
	a.log.Info().Int("port", p.port).Int("local", p.local).Msgf("auto-forward: sprite %s port %d stopped listening; withdrawn", a.sprite, p.port)
	f.stopAccepting()
	a.d.draining.Add(1)
	go func() {
		defer a.d.draining.Done()
		f.drain(time.Second)
	}()
}

func (a *autoSprite) loop() {
	defer a.wg.Done()
	for {
		a.mu.Lock()
		next := a.checkLocked(a.d.clock.Now())
		a.mu.Unlock()
		var tick <-chan time.Time
		if next > 0 {
			tick = a.d.clock.After(next)
		}
		select {
		case <-a.ctx.Done():
			return
		case <-a.kick:
		case <-tick:
		}
	}
}

// saveLocked writes the state file; a failure is logged, and the
// forwards carry on.
func (a *autoSprite) saveLocked() {
	st := autoState{Version: autoStateVersion, Sprite: a.sprite}
	for _, p := range a.ports {
		st.Ports = append(st.Ports, autoStatePort{Port: p.port, Local: p.local, Name: p.name, Active: p.fwd != nil})
	}
	sort.Slice(st.Ports, func(i, j int) bool { return st.Ports[i].Port < st.Ports[j].Port })
	if err := saveAutoState(a.dir, st); err != nil {
		a.log.Warn().Err(err).Msg("auto-forward: could not save its state; a restart will not know these ports until they are seen again")
	}
}

// linkUp and linkDown count the connections up to the sprite. In direct
// mode, reading the sprite's tables rides on them: while one is open the
// sprite is awake anyway. Lock order: d.mu before a.mu.
func (a *autoSprite) linkUp() {
	// A mux sprite whose agent cannot be deployed is served, and so
	// looked at, in direct mode. (Asked before a.mu: d.mu comes first.)
	fallback := a.d.agentStatus(a.sprite).State == "fallback"
	a.mu.Lock()
	a.active++
	start := a.active == 1 && !a.polling && !a.closed && (a.set.Mode == config.Direct || fallback)
	if start {
		a.polling = true
		a.wg.Add(1)
	}
	a.mu.Unlock()
	if start {
		go a.poll()
	}
}

func (a *autoSprite) linkDown() {
	a.mu.Lock()
	a.active--
	a.mu.Unlock()
}

// autoLink is one connection's count in its sprite's auto-forwarder. A
// link may come up on a spare's goroutine while its relay ends on another:
// the end is counted once, and a link that is up only after its end never
// counts, or the sprite would be looked at for ever.
type autoLink struct {
	mu    sync.Mutex
	a     *autoSprite
	ended bool
}

func (l *autoLink) up(a *autoSprite) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended || l.a != nil || a == nil {
		return
	}
	l.a = a
	a.linkUp()
}

func (l *autoLink) down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return
	}
	l.ended = true
	if l.a != nil {
		l.a.linkDown()
	}
}

// wantsLookLocked reports whether the list of sprites should be asked
// about this sprite: nothing of ours looks at it now, and it was not
// looked at lately (lookSpacing), nor failed to be (autoRetry).
func (a *autoSprite) wantsLookLocked(now time.Time) bool {
	return !a.closed && a.active <= 0 && a.watching <= 0 && !a.polling && !a.looking &&
		(a.lastLook.IsZero() || now.Sub(a.lastLook) >= lookSpacing) &&
		(a.readErrAt.IsZero() || now.Sub(a.readErrAt) >= autoRetry)
}

func (a *autoSprite) wantsLook(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.wantsLookLocked(now)
}

// lookOnce reads the tables of a sprite that the list shows running with
// no connection of ours, unless it closed or began to be looked at
// meanwhile.
func (a *autoSprite) lookOnce() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.wantsLookLocked(a.d.clock.Now()) {
		return
	}
	a.looking = true
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.log.Debug().Msg("auto-forward: sprite running with no connection; looking at its ports once")
		a.readTables()
		a.mu.Lock()
		a.looking = false
		a.lastLook = a.d.clock.Now()
		a.mu.Unlock()
	}()
}

func (a *autoSprite) poll() {
	defer a.wg.Done()
	for {
		a.mu.Lock()
		if a.active <= 0 || a.closed {
			a.polling = false
			a.lastLook = a.d.clock.Now()
			a.mu.Unlock()
			return
		}
		read := a.readErrAt.IsZero() || a.d.clock.Now().Sub(a.readErrAt) >= autoRetry
		a.mu.Unlock()
		if read {
			a.readTables()
		}
		select {
		case <-a.ctx.Done():
			a.mu.Lock()
			a.polling = false
			a.mu.Unlock()
			return
		case <-a.d.clock.After(autoPoll):
		}
	}
}

// readTables runs one short exec that prints the sprite's TCP tables.
func (a *autoSprite) readTables() {
	env := a.d.env.Load()
	ctx, cancel := context.WithTimeout(a.ctx, 15*time.Second)
	defer cancel()
	out, code, err := env.client.Output(ctx, a.sprite, tablesCmd, maxTablesOutput)
	if err == nil && code != 0 {
		err = fmt.Errorf("exit code %d", code)
	}
	ls, bad := procnet.Parse(out)
	if err == nil && len(ls) == 0 && bad > 0 {
		err = fmt.Errorf("%d lines that are not a TCP table", bad)
	}
	if err != nil {
		if a.ctx.Err() == nil {
			a.mu.Lock()
			a.readErrAt = a.d.clock.Now()
			a.mu.Unlock()
			a.log.Warn().Err(err).Stringer("retry_in", autoRetry).Msg("auto-forward: could not read the sprite's listening ports")
		}
		return
	}
	a.mu.Lock()
	a.readErrAt = time.Time{}
	a.mu.Unlock()
	a.report(portList(procnet.Ports(ls)))
}

func portList(ls []procnet.Listener) mux.PortList {
	out := mux.PortList{Ports: make([]mux.ListeningPort, 0, len(ls))}
	for _, l := range ls {
		out.Ports = append(out.Ports, mux.ListeningPort{Port: l.Port, Addr: l.Addr.String()})
	}
	return out
}

// watch follows the agent's reports on a mux session until it ends.
func (a *autoSprite) watch(sess *mux.Session) {
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	a.mu.Lock()
	a.watching++
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.watching--
		a.lastLook = a.d.clock.Now()
		a.mu.Unlock()
	}()
	err := sess.WatchPorts(ctx, a.report)
	switch {
	case errors.Is(err, mux.ErrNoWatch):
		a.mu.Lock()
		news := !a.noWatch
		a.noWatch = true
		a.mu.Unlock()
		if news {
			a.log.Warn().Err(err).Msg("auto-forward: the agent cannot watch ports")
		}
	case err != nil && ctx.Err() == nil:
		a.log.Debug().Err(err).Msg("auto-forward: port watch ended")
	}
}

// rows are the status rows of the sprite's auto-forwards.
func (a *autoSprite) forwards() []*forward {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*forward
	for _, p := range a.ports {
		if p.fwd != nil {
			out = append(out, p.fwd)
		}
	}
	return out
}

// close stops discovery, saves the state with every listening port
// active, so that a restart brings them back, and drains the forwards
// with grace. wait: return only when they have ended.
func (a *autoSprite) close(grace time.Duration, wait bool) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.saveLocked()
	a.closed = true
	var fs []*forward
	for _, p := range a.ports {
		if p.fwd != nil {
			fs = append(fs, p.fwd)
		}
	}
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
	for _, f := range fs {
		f.stopAccepting()
	}
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Add(1)
		a.d.draining.Add(1)
		go func() {
			defer a.d.draining.Done()
			defer wg.Done()
			f.drain(grace)
		}()
	}
	if wait {
		wg.Wait()
	}
}

func hasAuto(cfg *config.Config) bool {
	for _, s := range cfg.Sprites {
		if s.Auto.On {
			return true
		}
	}
	return false
}

// autoFor returns the sprite's auto-forwarder, or nil.
func (d *Daemon) autoFor(sprite string) *autoSprite {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.autos[sprite]
}

// applyAuto starts, keeps or replaces each sprite's auto-forwarder. A
// changed setting replaces it; its ports come back from the state file.
func (d *Daemon) applyAuto(cfg *config.Config) {
	static := map[string]map[int]bool{}
	for _, f := range cfg.Forwards {
		if static[f.Sprite] == nil {
			static[f.Sprite] = map[int]bool{}
		}
		static[f.Sprite][f.Port] = true
	}
	d.mu.Lock()
	var stop []*autoSprite
	keep := map[string]bool{}
	for sprite, a := range d.autos {
		s, ok := cfg.Sprites[sprite]
		a.mu.Lock()
		same := ok && s.Auto.On && sameSprite(a.set, s) && a.agentPort == cfg.AgentPort
		if same {
			a.static = static[sprite]
		}
		a.mu.Unlock()
		if same {
			keep[sprite] = true
			continue
		}
		stop = append(stop, a)
		delete(d.autos, sprite)
	}
	d.mu.Unlock()
	// Old listeners close before new ones bind the same local ports.
	for _, a := range stop {
		a.close(cfg.ShutdownGrace, false)
	}
	names := make([]string, 0, len(cfg.Sprites))
	for name := range cfg.Sprites {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, sprite := range names {
		s := cfg.Sprites[sprite]
		if !s.Auto.On || keep[sprite] {
			continue
		}
		a := newAutoSprite(d, sprite, s, cfg.AgentPort, static[sprite])
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			a.close(0, true)
			return
		}
		d.autos[sprite] = a
		d.startAutoListLocked()
		d.mu.Unlock()
	}
}

// sameSprite compares sprite settings, ignoring where they sit in the file.
func sameSprite(a, b config.SpriteSettings) bool {
	return a.Host == b.Host && a.KeepAwake == b.KeepAwake && a.Mode == b.Mode && a.Auto.On == b.Auto.On &&
		a.Auto.Listen == b.Auto.Listen && a.Auto.Only.String() == b.Auto.Only.String() && a.Auto.Exclude.String() == b.Auto.Exclude.String()
}
