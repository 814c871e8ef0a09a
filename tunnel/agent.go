package tunnel

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/agent"
	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/sprites"
)

// agentSettings are what an agent pool is made with; a reload that changes
// them makes new pools, and the old ones idle out with their streams.
type agentSettings struct {
	port         int
	dir, binary  string
	idle, window time.Duration
	buffer       int
}

func settingsOf(cfg *config.Config) agentSettings {
	return agentSettings{port: cfg.AgentPort, dir: cfg.AgentDir, binary: cfg.AgentBinary,
		idle: cfg.MuxIdleTimeout, window: cfg.ResumeWindow, buffer: cfg.ResumeBuffer}
}

// ErrAgentUnavailable: the agent could not be deployed; mux forwards to the
// sprite fall back to direct mode for a while.
var ErrAgentUnavailable = errors.New("agent unavailable")

// deployError marks a failure to deploy the agent, as opposed to a failure
// to reach the sprite at all.
type deployError struct{ err error }

func (e *deployError) Error() string { return e.err.Error() }
func (e *deployError) Unwrap() error { return e.err }

// fallbackRetry is how long a sprite whose agent could not be deployed is
// served in direct mode before deploying is tried again. A reload tries at
// once.
const fallbackRetry = 5 * time.Minute

// Deployment bounds. Every API call of a deployment has its own deadline,
// derived from wake_timeout since any call may have to wake the sprite, so
// that a call that hangs ends the deployment with a log line that names it,
// and the connections waiting on it go direct, rather than all of them
// waiting on it for good.
const (
	// slowUpload is the pace an upload is allowed on top of wake_timeout:
	// a slow uplink, not a stalled one. 3.4 MB take 13 s more.
	slowUpload = 256 << 10 // bytes per second
	// agentStartup bounds a started agent's way to its ready line: it stops
	// the agent it replaces (3 s) and waits for that one's port (5 s).
	agentStartup = 10 * time.Second
	// maxLook bounds what the look into the sprite may print before its
	// last line: a few short lines, one per agent binary it finds.
	maxLook = 16 << 10
	// lookWait bounds how long the look's shell waits to be told what to
	// start, should the daemon that asked go away without a word.
	lookWait = 10 * time.Minute
	// maxAgentStdout bounds what the agent may print before its ready line.
	maxAgentStdout = 64 << 10
	// helloTimeout bounds the handshake once the link is up. An agent
	// greets as it accepts, so what stays silent is not an agent.
	helloTimeout = 15 * time.Second
	// agentPorts is how many ports a pool tries, agent_port first, when
	// each is held by something that is not this deployment's agent,
	// before it serves the sprite in direct mode.
	agentPorts = 4
)

// agentPool is one sprite's agent: how it is found or deployed, and the
// mux client that carries every mux-mode connection to it.
type agentPool struct {
	d      *Daemon
	sprite string
	set    agentSettings
	waker  *Waker
	client *mux.Client
	log    zerolog.Logger

	mu     sync.Mutex
	secret string
	// port is where the agent listens: agent_port, unless something that
	// is not this deployment's agent holds it; moved then says what was
	// found there.
	port         int
	moved        string
	binaryLogged bool
	images       map[string]*image // by binary path
	preparing    sync.WaitGroup    // prepare's goroutines, which Shutdown waits for
	arch         string            // the sprite's, once a look has said
	fallback     error
	retryAt      time.Time
	deploys      int64
	lastDeploy   time.Duration
	// What the state directory's agent record says (see agentRecord):
	// recalled once it was read, remembered while the secret is the
	// record's and not yet proved this run, saved as last written.
	apiURL     string
	recalled   bool
	remembered bool
	saved      agentRecord
	// sum is the sha256 of the agent this pool deployed on port, for the
	// record; "" when it found the agent running.
	sum string
}

func newAgentPool(d *Daemon, sprite string, set agentSettings, waker *Waker, keepalive time.Duration) *agentPool {
	p := &agentPool{d: d, sprite: sprite, set: set, waker: waker, port: set.port,
		log: d.log.With().Str("sprite", sprite).Str("agent", "mux").Logger()}
	if d.cfg != nil {
		p.apiURL = d.cfg.APIURL
	}
	p.client = mux.NewClient(mux.ClientOptions{
		Connect: p.connect, Buffer: set.buffer, Budget: d.budget, ResumeWindow: set.window, IdleTimeout: set.idle,
		PingInterval: keepalive, ProbeAfter: d.hooks.MuxProbeAfter, Log: p.log,
		OnSession: func(s *mux.Session) {
			if a := d.autoFor(sprite); a != nil {
				a.watch(s)
			}
		},
	})
	return p
}

// usable reports whether connections should try the agent, and if not, why.
func (p *agentPool) usable() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fallback != nil && p.d.clock.Now().Before(p.retryAt) {
		return p.fallback
	}
	return nil
}

// fail records a deploy failure. It reports whether this is news, so that
// it is logged once, not per connection.
func (p *agentPool) fail(err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	news := p.fallback == nil
	p.fallback, p.retryAt = err, p.d.clock.Now().Add(fallbackRetry)
	return news
}

// AgentStatus is the agent's part of a mux forward's status.
type AgentStatus struct {
	State    string `json:"state"` // connected, idle, fallback
	Fallback string `json:"fallback,omitempty"`
	// Port is where the agent listens; Moved says why it is not
	// agent_port: what was found there.
	Port        int           `json:"port"`
	Moved       string        `json:"moved,omitempty"`
	Sessions    int64         `json:"sessions"`
	Deploys     int64         `json:"deploys"`
	LastDeploy  time.Duration `json:"last_deploy_ns,omitempty"`
	Streams     int           `json:"streams"`
	Resumptions int64         `json:"resumptions"`
}

func (p *agentPool) status() AgentStatus {
	cs := p.client.Stats()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := AgentStatus{State: "idle", Port: p.port, Sessions: cs.Sessions, Deploys: p.deploys, LastDeploy: p.lastDeploy, Streams: cs.Streams, Resumptions: cs.Resumptions}
	if p.moved != "" {
		st.Moved = fmt.Sprintf("%s; the agent moved to port %d", p.moved, p.port)
	}
	if cs.Connected {
		st.State = "connected"
	}
	if p.fallback != nil && p.d.clock.Now().Before(p.retryAt) {
		st.State, st.Fallback = "fallback", p.fallback.Error()
	}
	return st
}

// agentAbsent is a proxy connect refused on the agent's port: nothing runs
// there, so deploy, rather than wait for it as for a user's server.
type agentAbsent struct{ err error }

func (e *agentAbsent) Error() string { return "no agent listens: " + e.err.Error() }

// portHeld is an agent that could not listen: another process holds its
// port, and Replace stops only agents.
type portHeld struct{ port int }

func (e *portHeld) Error() string {
	return fmt.Sprintf("another process holds port %d, and it is not this deployment's agent", e.port)
}

func (p *agentPool) agentPort() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.port
}

// connect reaches the agent, deploying it when it is not there or is not
// ours, and moving to another port when something that is not our agent
// holds its port. It is mux.ClientOptions.Connect. Nothing but the
// handshake reaches a port until the agent there has proved the secret.
//
// A pool takes the secret and port from the agent record that a daemon
// before it left in the state directory (see agentRecord), and tries them
// first: with the agent running, no exec at all. A record that proves
// stale costs that one attempt, then the pool carries on as one without.
//
// A pool that knows no secret yet looks into the sprite first, in one exec
// (see lookScript), while a link toward the agent is upgraded beside it:
// with the agent running, the handshake follows on that link at once;
// without it, the look's shell starts the agent as soon as it is uploaded.
func (p *agentPool) connect(ctx context.Context, h mux.Hello) (*mux.Session, bool, error) {
	c := p.d.env.Load().client
	p.recall()
	deployedOn, given := 0, 0
	var lk *look
	var spare *spareDial
	defer func() {
		lk.close()
		spare.close()
	}()
	for {
		start := p.d.clock.Now()
		port := p.agentPort()
		secret, running := p.cachedSecret(), true
		if secret == "" && lk == nil {
			spare = p.dialSpare(ctx, c)
			// Compressing the agent takes as long as the look, or longer
			// on a busy machine: begin it now, for the machine it most
			// likely is, in case the look says it must be uploaded.
			p.prepare(p.likelyBinary())
			// The look's exec takes the HTTP client's idle connection for its
			// WebSocket, and an upload would wait for TLS on a new one: a call
			// that the API answers itself, without the sprite, opens that one
			// meanwhile.
			defer p.warmHTTP(ctx, c)()
			var err error
			if lk, err = p.look(ctx, c, port); err != nil {
				return nil, false, err
			}
			secret, running = lk.secret, lk.running
			p.setLooked(secret)
		}
		if secret != "" && running {
			sess, resumed, err := p.handshake(ctx, c, port, secret, h, spare.take(ctx))
			var absent *agentAbsent
			remembered := p.triedRecord(err)
			switch {
			case err == nil:
				p.remember(port, secret)
				return sess, resumed, nil
			case remembered && (errors.As(err, &absent) || errors.Is(err, mux.ErrBadSecret)):
				// The record is stale: the sprite lost its agent (a restart
				// that lost /tmp), or another deployment replaced it. Look,
				// as a daemon with no record does: the agent there may run
				// with the other deployment's secret, which the look reads.
				p.log.Info().Err(err).Int("port", port).Msg("the agent this daemon remembered is not there as it was; looking into the sprite")
				p.mu.Lock()
				p.secret = ""
				if errors.As(err, &absent) {
					// Whatever held agent_port before may be gone with it.
					p.port, p.moved = p.set.port, ""
				}
				p.mu.Unlock()
				continue
			case errors.As(err, &absent):
				if deployedOn == port {
					return nil, false, &deployError{fmt.Errorf("sprite %s: agent started but cannot be reached on port %d", p.sprite, port)}
				}
			case errors.Is(err, mux.ErrAgentProof), errors.Is(err, mux.ErrNotAgent),
				deployedOn == port && (errors.Is(err, mux.ErrBadSecret) || errors.Is(err, mux.ErrVersion)):
				// Not our agent, whatever it says: our deploy just reported
				// this port as its own, or what answered cannot prove the
				// secret. Another port is where an agent can be trusted.
				if err := p.moveOn(port, "failed the agent's proof", err, &given); err != nil {
					return nil, false, err
				}
				continue
			case errors.Is(err, mux.ErrBadSecret), errors.Is(err, mux.ErrVersion):
				// An agent of another deployment or version, perhaps ours:
				// a deploy with --replace stops it, and says if it was not.
				p.log.Info().Err(err).Int("port", port).Msg("the agent in the sprite is not this deployment's; redeploying")
				p.setSecret("")
			default:
				return nil, false, fmt.Errorf("sprite %s: agent handshake on port %d: %w", p.sprite, port, err)
			}
		}
		if lk == nil || lk.sess == nil || lk.port != port {
			lk.close()
			var err error
			if lk, err = p.look(ctx, c, port); err != nil {
				return nil, false, err
			}
		}
		err := p.deploy(ctx, c, port, lk)
		if held := (*portHeld)(nil); errors.As(err, &held) {
			if err := p.moveOn(port, "holds it", err, &given); err != nil {
				return nil, false, err
			}
			continue
		}
		if err != nil {
			return nil, false, err
		}
		took := p.d.clock.Now().Sub(start)
		p.mu.Lock()
		p.deploys++
		p.lastDeploy = took
		p.fallback = nil
		p.mu.Unlock()
		p.log.Info().Stringer("took", took.Round(time.Millisecond)).Int("port", port).Msg("agent deployed")
		deployedOn = port
	}
}

// warmHTTP asks the API about the sprite, for the connection it leaves
// idle; the answer does not matter. The function it returns waits for it.
func (p *agentPool) warmHTTP(ctx context.Context, c *sprites.Client) func() {
	ctx, cancel := context.WithTimeout(ctx, p.waker.timeoutValue())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Get(ctx, p.sprite)
	}()
	return func() {
		cancel()
		<-done
	}
}

// spareDial is a proxy link to the sprite being upgraded ahead of the
// handshake that may use it.
type spareDial struct {
	done   chan struct{}
	cancel context.CancelFunc
	spare  *sprites.Spare
	err    error
	taken  bool
}

// dialSpare starts upgrading a link without a target, for the handshake
// that may follow the look into the sprite.
func (p *agentPool) dialSpare(ctx context.Context, c *sprites.Client) *spareDial {
	ctx, cancel := context.WithCancel(ctx)
	sd := &spareDial{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(sd.done)
		sd.spare, sd.err = c.DialSpare(ctx, p.sprite)
	}()
	return sd
}

// take waits for the link, and returns it unless its upgrade failed or it
// died waiting; nil the second time. The caller owns what it returns.
func (sd *spareDial) take(ctx context.Context) *sprites.Spare {
	if sd == nil || sd.taken {
		return nil
	}
	select {
	case <-sd.done:
	case <-ctx.Done():
		return nil
	}
	sd.taken = true
	if sd.err != nil {
		return nil
	}
	if sd.spare.Dead() {
		sd.spare.CloseNow()
		return nil
	}
	return sd.spare
}

// close drops the link unless it was taken.
func (sd *spareDial) close() {
	if sd == nil {
		return
	}
	sd.cancel()
	<-sd.done
	if !sd.taken && sd.spare != nil {
		sd.spare.CloseNow()
	}
}

// handshake dials the agent on port and proves the secret both ways. A
// spare link, upgraded while the deployment looked into the sprite, saves
// the upgrade: the hello follows its target at once. A link that drops
// during the hello is dialled again, twice at most: the drop says nothing
// about the agent.
func (p *agentPool) handshake(ctx context.Context, c *sprites.Client, port int, secret string, h mux.Hello, spare *sprites.Spare) (*mux.Session, bool, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var link *sprites.Link
		if spare != nil {
			link, err = spare.Start("localhost", port)
			spare = nil
		} else {
			link, err = Connect(ctx, p.waker, port, func(ctx context.Context) (*sprites.Link, error) {
				l, err := c.Dial(ctx, p.sprite, "localhost", port)
				if sprites.IsRefused(err) {
					// Permanent for the retry loop: deploying is the remedy.
					return nil, &sprites.Error{Op: "proxy", Sprite: p.sprite, Port: port, Class: sprites.Permanent, Err: &agentAbsent{err}}
				}
				return l, err
			})
			if err != nil {
				return nil, false, err
			}
		}
		var sess *mux.Session
		var resumed bool
		if err == nil {
			sess, resumed, err = p.hello(ctx, link, secret, h)
		}
		if sprites.IsRefused(err) {
			// On a spare, the refusal comes as the answer to its target.
			err = &agentAbsent{err}
		}
		if err == nil || !linkLost(ctx, err) {
			return sess, resumed, err
		}
		p.log.Debug().Err(err).Int("port", port).Msg("the link to the agent dropped during the handshake; dialling again")
	}
	return nil, false, err
}

// linkLost reports that a handshake failed with its link, not with what
// answered on it.
func linkLost(ctx context.Context, err error) bool {
	return ctx.Err() == nil && !answered(err) && !errors.Is(err, mux.ErrProtocol) && sprites.ClassOf(err) != sprites.Permanent
}

// answered reports that a handshake failed with a verdict on the agent's
// port: nothing listens, the agent there refused our secret or speaks
// another version, or what answered is not our agent.
func answered(err error) bool {
	var absent *agentAbsent
	return errors.As(err, &absent) || errors.Is(err, mux.ErrBadSecret) || errors.Is(err, mux.ErrVersion) ||
		errors.Is(err, mux.ErrNotAgent) || errors.Is(err, mux.ErrAgentProof)
}

// hello shakes hands with the agent on link.
func (p *agentPool) hello(ctx context.Context, link *sprites.Link, secret string, h mux.Hello) (*mux.Session, bool, error) {
	hctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	sess, resumed, err := mux.Dial(hctx, link, secret, h, p.log)
	if err != nil && ctx.Err() == nil && hctx.Err() != nil {
		err = fmt.Errorf("%w: it did not greet within %s", mux.ErrNotAgent, helloTimeout)
	}
	return sess, resumed, err
}

// moveOn gives up on port, where what it found (why) is not this
// deployment's agent, and makes the next port the pool's. Once agentPorts
// ports are given up it returns a deployError, so that the sprite is
// served in direct mode, and the next try starts from agent_port again.
func (p *agentPool) moveOn(port int, what string, why error, given *int) error {
	*given++
	if *given >= agentPorts {
		p.mu.Lock()
		p.port, p.moved = p.set.port, ""
		p.mu.Unlock()
		return &deployError{fmt.Errorf("sprite %s: the agent ports %d to %d are all held by something that is not this deployment's agent; on port %d: %w", p.sprite, p.set.port, port, port, why)}
	}
	next := port + 1
	if next > 65535 {
		next = 1024
	}
	found := fmt.Sprintf("something on the agent port %d of sprite %s %s", port, p.sprite, what)
	p.log.Warn().Err(why).Int("port", port).Int("next_port", next).Msgf("%s; redeploying on port %d", found, next)
	p.mu.Lock()
	p.port = next
	if port == p.set.port {
		p.moved = fmt.Sprintf("%s (%v)", found, why)
	}
	p.mu.Unlock()
	return nil
}

// setLooked takes the secret a look read in the sprite. Which agent
// binary it goes with is not known, unless it is the record's.
func (p *agentPool) setLooked(secret string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.secret, p.sum = secret, ""
	if secret != "" && secret == p.saved.Secret {
		p.sum = p.saved.SHA256
	}
}

// recall reads the sprite's agent record once per pool, and takes its
// secret and port as if this pool had deployed the agent: the first
// connection goes straight to the handshake. A record that cannot be read,
// or is for another API, protocol or agent_port, is not used.
func (p *agentPool) recall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recalled {
		return
	}
	p.recalled = true
	if p.secret != "" {
		return
	}
	dir := p.d.hooks.StateDir
	r, ok, err := loadAgentRecord(dir, p.sprite)
	switch {
	case err != nil:
		p.log.Warn().Err(err).Str("file", agentRecordFile(dir, p.sprite)).Msg("agent record unreadable; looking into the sprite instead, and overwriting it once connected")
		return
	case !ok:
		return
	case r.APIURL != p.apiURL, r.Protocol != mux.Version, r.Port < p.set.port || r.Port >= p.set.port+agentPorts:
		p.log.Debug().Str("file", agentRecordFile(dir, p.sprite)).Int("port", r.Port).Int("protocol", r.Protocol).
			Msg("the agent record is for another api_url, protocol or agent_port; not using it")
		return
	}
	p.secret, p.port, p.sum, p.saved, p.remembered = r.Secret, r.Port, r.SHA256, r, true
	if r.Port != p.set.port {
		p.moved = fmt.Sprintf("an earlier run found agent_port %d of sprite %s held", p.set.port, p.sprite)
	}
}

// triedRecord reports whether a handshake that ended with err tried the
// record's secret. Once the agent has given its verdict, right or wrong,
// the secret is this run's; a verdict against it removes the record, so
// that a daemon started next does not try it again.
func (p *agentPool) triedRecord(err error) bool {
	verdict := err == nil || answered(err)
	p.mu.Lock()
	tried := p.remembered
	if verdict {
		p.remembered = false
	}
	stale := tried && err != nil && verdict
	if stale {
		p.saved = agentRecord{}
	}
	p.mu.Unlock()
	if stale {
		if ferr := forgetAgentRecord(p.d.hooks.StateDir, p.sprite); ferr != nil {
			p.log.Warn().Err(ferr).Msg("could not remove the stale agent record")
		}
	}
	return tried
}

// remember writes the agent record once a handshake on port with secret
// succeeded, unless it says that already. A failure is logged: the next
// daemon looks into the sprite, as without a record.
func (p *agentPool) remember(port int, secret string) {
	dir := p.d.hooks.StateDir
	p.mu.Lock()
	r := agentRecord{Version: agentRecordVersion, Sprite: p.sprite, APIURL: p.apiURL, Port: port, Secret: secret, Protocol: mux.Version, SHA256: p.sum}
	same := r == p.saved
	p.mu.Unlock()
	if dir == "" || same || !isHex(secret, len(mux.NewSecret())/2) {
		return
	}
	if err := saveAgentRecord(dir, r); err != nil {
		p.log.Warn().Err(err).Str("file", agentRecordFile(dir, p.sprite)).Msg("could not save the agent record; the next daemon will look into the sprite for the secret")
		return
	}
	p.mu.Lock()
	p.saved = r
	p.mu.Unlock()
}

func (p *agentPool) setSecret(s string) {
	p.mu.Lock()
	p.secret = s
	p.mu.Unlock()
}

// step runs one API call of a deployment under its own deadline. A call
// that runs out is a deployError that names it, so that the sprite is
// served in direct mode; a sprite or token that is wrong is returned as
// it is, since no mode would work.
func (p *agentPool) step(ctx context.Context, name string, limit time.Duration, call func(context.Context) error) error {
	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	err := call(sctx)
	var de *deployError
	switch {
	case err == nil:
		return nil
	case ranOut(ctx, sctx):
		return p.timedOut(name, limit, err)
	case ctx.Err() != nil, errors.Is(err, sprites.ErrNotFound), errors.Is(err, sprites.ErrUnauthorized), errors.As(err, &de):
		return err
	}
	return &deployError{fmt.Errorf("sprite %s: deploy agent: %s: %w", p.sprite, name, err)}
}

// ranOut reports that a step's own deadline ended it, not the caller's.
func ranOut(ctx, sctx context.Context) bool {
	return ctx.Err() == nil && sctx.Err() != nil
}

// timedOut is the deployError of a step that ran out: it names the step.
func (p *agentPool) timedOut(name string, limit time.Duration, err error) error {
	return &deployError{fmt.Errorf("sprite %s: deploy agent: %s: no answer within %s (from wake_timeout): %w", p.sprite, name, limit, err)}
}

// cachedSecret is the deployment secret this pool knows: read by a look
// into the sprite, or made by its deploy. "" means none yet.
func (p *agentPool) cachedSecret() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.secret
}

// lookScript runs in the agent's directory. It prints what a deployment
// needs to know, one fact a line: the machine, whether gzip is there, each
// agent binary with the sha256 recorded beside it, the secret, whether the
// agent recorded in the pid file runs, and "looked". Then it waits for one
// line on stdin, "NAME SHA256 HOW SECRET", where HOW is gz (NAME.gz was
// uploaded), plain or have: it unpacks the binary if need be, records its
// hash beside it (only now is it known whole), writes the secret and
// becomes the agent, with its own arguments as the agent's. End of input
// instead ends it, and so does a watchdog after lookWait (the %d): the
// shell runs on when the exec is gone, as the agent it becomes must.
const lookScript = `( trap 'kill $s 2>/dev/null; exit' TERM; sleep %d & s=$!; wait $s && kill $$ ) >/dev/null 2>&1 </dev/null &
w=$!
echo "arch $(uname -m)"
command -v gzip >/dev/null 2>&1 && echo gzip
for f in spritefwd-agent-*.sha256; do
	[ -f "$f" ] && [ -f "${f%%.sha256}" ] && echo "have ${f%%.sha256} $(cat -- "$f")"
done
[ -f secret ] && echo "secret $(cat secret)"
[ -f agent.pid ] && kill -0 "$(cat agent.pid)" 2>/dev/null && echo running
echo looked
if ! read -r name sum how secret; then kill $w; exit 0; fi
kill $w
if [ "$how" = gz ]; then gzip -df -- "$name.gz" || exit 1; fi
echo "$sum" > "$name.sha256" || exit 1
(umask 077 && echo "$secret" > secret) || exit 1
exec "./$name" "$@" </dev/null
`

// look is what one exec found in the sprite (see lookScript), and the
// shell that found it, which waits to be told what to start.
type look struct {
	port    int    // on the agent's command line that the shell holds
	arch    string // as uname -m prints it
	gzip    bool
	have    map[string]string // agent binaries by name: the sha256 beside each
	secret  string
	running bool
	sess    *sprites.ExecSession // nil once told what to start, or closed
	rest    []byte               // stdout after "looked"
}

// look asks the sprite, in one exec, what a deployment needs to know and
// the secret of the one before, and keeps the shell that answered, which
// starts the agent on port when deploy tells it to.
func (p *agentPool) look(ctx context.Context, c *sprites.Client, port int) (*look, error) {
	cmd := append([]string{"sh", "-c", fmt.Sprintf(lookScript, int(lookWait/time.Second)), "spritefwd-deploy", agent.Command},
		agent.Args{Listen: "127.0.0.1:" + strconv.Itoa(port), SecretFile: "secret", Replace: true, LogFile: "agent.log"}.Argv()...)
	opts := sprites.ExecOptions{Cmd: cmd, Dir: p.set.dir, Stdin: true, KeepRunning: true}
	var lk *look
	made := false
	err := p.step(ctx, "look into the sprite", p.waker.timeoutValue(), func(ctx context.Context) error {
		sess, err := c.Exec(ctx, p.sprite, opts)
		if err != nil && ctx.Err() == nil && !made {
			// A server may refuse to run a command in a directory that is
			// not there yet; writing a file into it makes it.
			if werr := c.WriteFile(ctx, p.sprite, path.Join(p.set.dir, ".dir"), 0o600, strings.NewReader("")); werr != nil {
				return werr
			}
			made = true
			sess, err = c.Exec(ctx, p.sprite, opts)
		}
		if err != nil {
			return err
		}
		if lk, err = readLook(ctx, sess); err != nil {
			sess.Close()
			return err
		}
		lk.sess, lk.port = sess, port
		return nil
	})
	return lk, err
}

// readLook reads the look's lines, up to "looked".
func readLook(ctx context.Context, sess *sprites.ExecSession) (*look, error) {
	var out []byte
	var errOut bytes.Buffer
	for {
		ev, err := sess.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w (stderr: %s)", err, tail(errOut.Bytes()))
		}
		switch {
		case ev.Exited:
			return nil, fmt.Errorf("it exited with code %d: %s", ev.Code, tail(errOut.Bytes()))
		case ev.Stream == sprites.StreamStderr:
			if errOut.Len() < 8<<10 {
				errOut.Write(ev.Data)
			}
		case ev.Stream == sprites.StreamStdout:
			if len(out)+len(ev.Data) > maxLook {
				return nil, fmt.Errorf("it printed more than %d bytes", maxLook)
			}
			out = append(out, ev.Data...)
			if i := bytes.Index(out, []byte("looked\n")); i >= 0 && (i == 0 || out[i-1] == '\n') {
				lk := parseLook(out[:i])
				lk.rest = out[i+len("looked\n"):]
				return lk, nil
			}
		}
	}
}

// parseLook reads the lines of lookScript before "looked". What it does
// not recognise it ignores: a binary without a well-formed hash is not
// known to be whole, and is uploaded again.
func parseLook(out []byte) *look {
	lk := &look{have: map[string]string{}}
	for _, line := range strings.Split(string(out), "\n") {
		word, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch word {
		case "arch":
			lk.arch = rest
		case "gzip":
			lk.gzip = rest == ""
		case "running":
			lk.running = rest == ""
		case "secret":
			lk.secret = rest
		case "have":
			name, sum, _ := strings.Cut(rest, " ")
			if strings.HasPrefix(name, agentPrefix) && isHex(sum, sha256.Size) {
				lk.have[name] = sum
			}
		}
	}
	return lk
}

func isHex(s string, n int) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == n
}

// start tells the look's shell to start the agent name, whose sha256 is
// sum, uploaded as how says, with secret.
func (lk *look) start(ctx context.Context, name, sum, how, secret string) error {
	return lk.sess.WriteStdin(ctx, []byte(name+" "+sum+" "+how+" "+secret+"\n"))
}

// close ends a shell that was not told what to start, and detaches from
// one that was (the agent it became runs on).
func (lk *look) close() {
	if lk == nil || lk.sess == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = lk.sess.CloseStdin(ctx)
	lk.sess.Close()
	lk.sess = nil
}

// deploy starts the agent on port through the look's shell, uploading it
// first unless the sprite has it already, and returns once it listens.
// The agent replaces the one recorded in its directory.
func (p *agentPool) deploy(ctx context.Context, c *sprites.Client, port int, lk *look) error {
	wake := p.waker.timeoutValue()
	fail := func(format string, args ...any) error {
		return &deployError{fmt.Errorf("sprite %s: deploy agent: "+format, append([]any{p.sprite}, args...)...)}
	}
	arch, err := machine(lk.arch)
	if err != nil {
		return fail("%w", err)
	}
	bin, err := p.binary(arch)
	if err != nil {
		return fail("%w", err)
	}
	p.mu.Lock()
	p.arch = arch
	p.mu.Unlock()
	img, err := p.prepare(bin).wait(ctx)
	if err != nil {
		return fail("%s: %w", bin, err)
	}
	name, sum := img.name, img.sum
	// The emulator's fs/write, and perhaps the real one, writes over a
	// file in place, which fails with ETXTBSY while an agent runs it: a
	// name of its own per content means a redeploy never writes over a
	// running agent, and the same content is never sent twice.
	exe := path.Join(p.set.dir, name)
	how := "have"
	if lk.have[name] == sum {
		p.log.Debug().Str("exe", exe).Msg("the sprite has this agent already; not uploading it")
	} else {
		// Compressed, the agent is about 42% of its size, which is most of
		// a first deploy's time on a slow uplink; the look's shell unpacks
		// it as it starts the agent.
		var body io.Reader = bytes.NewReader(img.gz)
		dst, n := exe+".gz", int64(len(img.gz))
		how = "gz"
		if !lk.gzip {
			f, err := os.Open(bin)
			if err != nil {
				return fail("%w", err)
			}
			defer f.Close()
			if plain, _, size, err := contentName(f); err != nil || plain != name {
				return fail("%s changed while it was deployed (%v); the next connection tries again", bin, err)
			} else if _, err := f.Seek(0, io.SeekStart); err != nil {
				return fail("%s: %w", bin, err)
			} else {
				body, dst, n, how = f, exe, size, "plain"
			}
		}
		limit := wake + time.Duration(n/slowUpload)*time.Second
		if err := p.step(ctx, "upload "+bin, limit, func(ctx context.Context) error {
			return c.WriteFile(ctx, p.sprite, dst, 0o755, body)
		}); err != nil {
			return err
		}
		p.log.Debug().Int64("bytes", n).Bool("gzip", how == "gz").Msg("agent uploaded")
	}
	secret := mux.NewSecret()
	sess := lk.sess
	if err := p.step(ctx, "start", wake, func(ctx context.Context) error {
		return lk.start(ctx, name, sum, how, secret)
	}); err != nil {
		return err
	}
	out := lk.rest
	lk.rest = nil
	return p.step(ctx, "wait for it to listen", max(wake, agentStartup), func(ctx context.Context) error {
		var errOut bytes.Buffer
		for {
			for {
				line, rest, ok := bytes.Cut(out, []byte("\n"))
				if !ok {
					break
				}
				if _, ok := agent.ParseReady(line); ok {
					p.mu.Lock()
					p.secret, p.sum = secret, sum
					p.mu.Unlock()
					return nil
				}
				if agent.ParsePortHeld(line) {
					return &portHeld{port}
				}
				out = rest
			}
			ev, err := sess.Next(ctx)
			if err != nil {
				return fmt.Errorf("%w (stderr: %s)", err, tail(errOut.Bytes()))
			}
			switch {
			case ev.Exited:
				return fmt.Errorf("it exited with code %d: %s", ev.Code, tail(errOut.Bytes()))
			case ev.Stream == sprites.StreamStderr:
				if errOut.Len() < 8<<10 {
					errOut.Write(ev.Data)
				}
			case ev.Stream == sprites.StreamStdout:
				if len(out)+len(ev.Data) > maxAgentStdout {
					return fmt.Errorf("it printed more than %d bytes and no ready line", maxAgentStdout)
				}
				out = append(out, ev.Data...)
			}
		}
	})
}

// agentPrefix begins the name of every agent binary in the sprite.
const agentPrefix = "spritefwd-agent-"

// contentName names an agent binary after its content, and returns its
// sha256 and size.
func contentName(f *os.File) (name, sum string, size int64, err error) {
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", "", 0, err
	}
	b := h.Sum(nil)
	return agentPrefix + hex.EncodeToString(b[:8]), hex.EncodeToString(b), n, nil
}

// image is an agent binary as a deploy needs it: its name, its sha256
// and its gzip, made once per pool and content, off the deploy's path.
type image struct {
	done      chan struct{}
	size      int64
	mod       time.Time
	name, sum string
	gz        []byte
	err       error
}

// prepare returns the image of the binary at bin, making it in the
// background if the pool has none of the file as it is now. An empty bin
// prepares nothing.
func (p *agentPool) prepare(bin string) *image {
	fi, err := os.Stat(bin)
	p.mu.Lock()
	defer p.mu.Unlock()
	if img := p.images[bin]; img != nil && err == nil && img.size == fi.Size() && img.mod.Equal(fi.ModTime()) {
		return img
	}
	img := &image{done: make(chan struct{})}
	if err != nil || bin == "" {
		img.err = err
		close(img.done)
		return img
	}
	img.size, img.mod = fi.Size(), fi.ModTime()
	if p.images == nil {
		p.images = map[string]*image{}
	}
	p.images[bin] = img
	p.preparing.Add(1)
	go func() {
		defer p.preparing.Done()
		defer close(img.done)
		b, err := os.ReadFile(bin)
		if err != nil {
			img.err = err
			return
		}
		h := sha256.Sum256(b)
		img.name, img.sum = agentPrefix+hex.EncodeToString(h[:8]), hex.EncodeToString(h[:])
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		if _, err := zw.Write(b); err != nil {
			img.err = err
			return
		}
		img.err = zw.Close()
		img.gz = z.Bytes()
	}()
	return img
}

func (img *image) wait(ctx context.Context) (*image, error) {
	select {
	case <-img.done:
		return img, img.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// likelyBinary is the binary a look is likely to ask for: the one the
// sprite last ran, or amd64's; "" when there is none to prepare.
func (p *agentPool) likelyBinary() string {
	p.mu.Lock()
	arch := p.arch
	p.mu.Unlock()
	if arch == "" {
		arch = "amd64"
	}
	bin, err := p.binary(arch)
	if err != nil {
		return ""
	}
	return bin
}

// machine is the agent build for what uname -m printed.
func machine(m string) (string, error) {
	switch m {
	case "x86_64", "amd64":
		return "amd64", nil
	case "aarch64", "arm64":
		return "arm64", nil
	default:
		return "", fmt.Errorf("unsupported machine %q (the agent is built for x86_64 and aarch64)", m)
	}
}

// binary finds the linux agent for arch: agent_binary from the config, or
// what the daemon's embedder offers (a file next to the daemon, or itself).
// It says which once per pool: deploys repeat, the answer does not change.
func (p *agentPool) binary(arch string) (string, error) {
	b := strings.ReplaceAll(p.set.binary, "{arch}", arch)
	switch {
	case b != "":
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("agent_binary: %w", err)
		}
	case p.d.hooks.AgentBinary != nil:
		var err error
		if b, err = p.d.hooks.AgentBinary(arch); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("no linux/%s agent binary: set agent_binary, or put spritefwd-agent-linux-%s next to spritefwd (make build makes it)", arch, arch)
	}
	p.mu.Lock()
	first := !p.binaryLogged
	p.binaryLogged = true
	p.mu.Unlock()
	if first {
		p.logBinary(b, arch)
	}
	return b, nil
}

// logBinary says which file is uploaded, and warns when it is not the
// agent-only build: the whole daemon works as an agent, but it is several
// times the size, uploaded on every deploy.
func (p *agentPool) logBinary(bin, arch string) {
	var size int64
	if fi, err := os.Stat(bin); err == nil {
		size = fi.Size()
	}
	bi, err := buildinfo.ReadFile(bin)
	if err == nil && path.Base(bi.Path) == "spritefwd-agent" {
		p.log.Info().Str("binary", bin).Int64("bytes", size).Msg("uploading the agent-only build")
		return
	}
	what := "a build other than the agent-only one"
	if err == nil && path.Base(bi.Path) == "spritefwd" {
		what = "the whole daemon"
	}
	p.log.Warn().Str("binary", bin).Int64("bytes", size).
		Msgf("uploading %s as the agent, on every deploy: put spritefwd-agent-linux-%s next to spritefwd (make build makes it), or point agent_binary at it", what, arch)
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 400 {
		s = "…" + s[len(s)-400:]
	}
	if s == "" {
		return "nothing on stderr"
	}
	return s
}
