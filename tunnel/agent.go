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
	// maxUname bounds what uname -m may print; it prints one word.
	maxUname = 4 << 10
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
	packName     string // the binary whose gzip is pack
	pack         []byte
	fallback     error
	retryAt      time.Time
	deploys      int64
	lastDeploy   time.Duration
}

func newAgentPool(d *Daemon, sprite string, set agentSettings, waker *Waker, keepalive time.Duration) *agentPool {
	p := &agentPool{d: d, sprite: sprite, set: set, waker: waker, port: set.port,
		log: d.log.With().Str("sprite", sprite).Str("agent", "mux").Logger()}
	p.client = mux.NewClient(mux.ClientOptions{
		Connect: p.connect, Buffer: set.buffer, ResumeWindow: set.window, IdleTimeout: set.idle,
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
func (p *agentPool) connect(ctx context.Context, h mux.Hello) (*mux.Session, bool, error) {
	env := p.d.env.Load()
	deployedOn, given := 0, 0
	for {
		port := p.agentPort()
		secret, err := p.currentSecret(ctx, env.client)
		if err != nil {
			return nil, false, err
		}
		if secret != "" {
			sess, resumed, err := p.handshake(ctx, env.client, port, secret, h)
			var absent *agentAbsent
			switch {
			case err == nil:
				return sess, resumed, nil
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
		start := p.d.clock.Now()
		err = p.deploy(ctx, env.client, port)
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

// handshake dials the agent on port and proves the secret both ways.
func (p *agentPool) handshake(ctx context.Context, c *sprites.Client, port int, secret string, h mux.Hello) (*mux.Session, bool, error) {
	link, err := Connect(ctx, p.waker, port, func(ctx context.Context) (*sprites.Link, error) {
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

// currentSecret returns the deployment secret: cached, or read from the
// sprite, where the deployment left it (mode 0600). Any daemon with the
// token can read it, which grants nothing: the token can run commands in
// the sprite anyway. "" means no agent was deployed.
func (p *agentPool) currentSecret(ctx context.Context, c *sprites.Client) (string, error) {
	p.mu.Lock()
	s := p.secret
	p.mu.Unlock()
	if s != "" {
		return s, nil
	}
	limit := p.waker.timeoutValue()
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	b, err := c.ReadFile(rctx, p.sprite, path.Join(p.set.dir, "secret"))
	switch {
	case sprites.IsNotFound(err):
		return "", nil
	case err != nil && ranOut(ctx, rctx):
		return "", p.timedOut("read the agent's secret", limit, err)
	case err != nil:
		// Not a deploy failure: the sprite may be waking or the network
		// flapping, and the next connection tries again.
		return "", fmt.Errorf("sprite %s: read the agent's secret: %w", p.sprite, err)
	}
	s = strings.TrimSpace(string(b))
	p.setSecret(s)
	return s, nil
}

// deploy uploads the agent unless the sprite has it, and starts it on
// port, replacing the agent recorded in its directory, and returns once it
// listens.
func (p *agentPool) deploy(ctx context.Context, c *sprites.Client, port int) error {
	wake := p.waker.timeoutValue()
	var arch string
	if err := p.step(ctx, "uname -m", wake, func(ctx context.Context) error {
		var err error
		arch, err = p.arch(ctx, c)
		return err
	}); err != nil {
		return err
	}
	fail := func(format string, args ...any) error {
		return &deployError{fmt.Errorf("sprite %s: deploy agent: "+format, append([]any{p.sprite}, args...)...)}
	}
	bin, err := p.binary(arch)
	if err != nil {
		return fail("%w", err)
	}
	f, err := os.Open(bin)
	if err != nil {
		return fail("%w", err)
	}
	defer f.Close()
	name, size, err := contentName(f)
	if err != nil {
		return fail("%s: %w", bin, err)
	}
	// The emulator's fs/write, and perhaps the real one, writes over a
	// file in place, which fails with ETXTBSY while an agent runs it: a
	// name of its own per content means a redeploy never writes over a
	// running agent, and the same content is never sent twice.
	exe := path.Join(p.set.dir, name)
	// The secret first: writing it makes the agent's directory on a fresh
	// sprite, where the look below runs (an exec may refuse a directory
	// that is not there, and then the upload would go uncompressed).
	secret := mux.NewSecret()
	if err := p.step(ctx, "write the secret", wake, func(ctx context.Context) error {
		return c.WriteFile(ctx, p.sprite, path.Join(p.set.dir, "secret"), 0o600, strings.NewReader(secret+"\n"))
	}); err != nil {
		return err
	}
	var found uploaded
	if err := p.step(ctx, "look for an uploaded agent", wake, func(ctx context.Context) error {
		var err error
		if found, err = p.lookFor(ctx, c, name); err != nil && ctx.Err() == nil {
			// Whatever kept us from looking (a directory that is not
			// there yet, on a server that refuses it), the upload says
			// more.
			found = uploaded{size: -1}
			return nil
		}
		return err
	}); err != nil {
		return err
	}
	unpack := false
	if found.size == size {
		p.log.Debug().Str("exe", exe).Msg("the sprite has this agent already; not uploading it")
	} else {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fail("%s: %w", bin, err)
		}
		// Compressed, the agent is about 42% of its size, which is most of
		// a first deploy's time on a slow uplink; the sprite unpacks it as
		// the agent starts, in the same call.
		var body io.Reader = f
		dst, n := exe, size
		if found.gzip {
			packed, err := p.packed(name, f)
			if err != nil {
				return fail("%s: %w", bin, err)
			}
			body, dst, n, unpack = bytes.NewReader(packed), exe+".gz", int64(len(packed)), true
		}
		limit := wake + time.Duration(n/slowUpload)*time.Second
		if err := p.step(ctx, "upload "+bin, limit, func(ctx context.Context) error {
			return c.WriteFile(ctx, p.sprite, dst, 0o755, body)
		}); err != nil {
			return err
		}
		p.log.Debug().Int64("bytes", n).Bool("gzip", unpack).Msg("agent uploaded")
	}
	var sess *sprites.ExecSession
	if err := p.step(ctx, "start", wake, func(ctx context.Context) error {
		var err error
		cmd := append([]string{exe, agent.Command}, agent.Args{Listen: "127.0.0.1:" + strconv.Itoa(port),
			SecretFile: "secret", Replace: true, LogFile: "agent.log"}.Argv()...)
		if unpack {
			// The arguments pass as the shell's own, unquoted and unparsed;
			// exec leaves the agent alone in the process. The name is
			// relative to the agent's directory, where the command runs.
			cmd[0] = name
			cmd = append([]string{"sh", "-c", `gzip -df -- "$0.gz" && exec "./$0" "$@"`}, cmd...)
		}
		sess, err = c.Exec(ctx, p.sprite, sprites.ExecOptions{Cmd: cmd, Dir: p.set.dir, KeepRunning: true})
		return err
	}); err != nil {
		return err
	}
	defer sess.Close() // detach; it keeps running
	return p.step(ctx, "wait for it to listen", max(wake, agentStartup), func(ctx context.Context) error {
		var out []byte
		var errOut bytes.Buffer
		for {
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
				for {
					line, rest, ok := bytes.Cut(out, []byte("\n"))
					if !ok {
						break
					}
					if _, ok := agent.ParseReady(line); ok {
						p.setSecret(secret)
						return nil
					}
					if agent.ParsePortHeld(line) {
						return &portHeld{port}
					}
					out = rest
				}
			}
		}
	})
}

// contentName names an agent binary after its content, and measures it.
func contentName(f *os.File) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return "spritefwd-agent-" + hex.EncodeToString(h.Sum(nil)[:8]), n, nil
}

// uploaded is what lookFor found in the sprite: the size of an agent
// binary of the name asked for (-1 if none), and whether gzip is there to
// unpack a compressed upload.
type uploaded struct {
	size int64
	gzip bool
}

// lookForScript prints "gzip" if the sprite has it, then the size of the
// file named by $0, or "none".
const lookForScript = `command -v gzip >/dev/null 2>&1 && echo gzip; stat -c %s -- "$0" 2>/dev/null || echo none`

// lookFor asks the sprite, in one call, whether the agent's directory has
// the file name and whether it has gzip. sprites.Client has no fs/list.
func (p *agentPool) lookFor(ctx context.Context, c *sprites.Client, name string) (uploaded, error) {
	sess, err := c.Exec(ctx, p.sprite, sprites.ExecOptions{Cmd: []string{"sh", "-c", lookForScript, name}, Dir: p.set.dir})
	if err != nil {
		return uploaded{size: -1}, err
	}
	defer sess.Close()
	out, _, err := collect(ctx, sess, 64)
	if err != nil {
		return uploaded{size: -1}, err
	}
	return parseLookFor(out), nil
}

// parseLookFor reads lookForScript's output. Anything else means no
// agent there and no gzip: upload it whole.
func parseLookFor(out []byte) uploaded {
	u := uploaded{size: -1}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		line = strings.TrimSpace(line)
		if line == "gzip" {
			u.gzip = true
		} else if n, err := strconv.ParseInt(line, 10, 64); err == nil && n >= 0 {
			u.size = n
		}
	}
	return u
}

// packed is the agent binary f, named name, compressed with gzip; made
// once per pool and binary, since deploys repeat.
func (p *agentPool) packed(name string, f io.Reader) ([]byte, error) {
	p.mu.Lock()
	if p.packName == name {
		defer p.mu.Unlock()
		return p.pack, nil
	}
	p.mu.Unlock()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := io.Copy(zw, f); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.packName, p.pack = name, b.Bytes()
	p.mu.Unlock()
	return b.Bytes(), nil
}

// collect reads a short command's stdout, at most limit bytes, and its
// exit code.
func collect(ctx context.Context, sess *sprites.ExecSession, limit int) ([]byte, int, error) {
	var out []byte
	for {
		ev, err := sess.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, -1, nil // gone without saying how it ended
		}
		if err != nil {
			return nil, 0, err
		}
		if ev.Stream == sprites.StreamStdout {
			if len(out)+len(ev.Data) > limit {
				return nil, 0, fmt.Errorf("it printed more than %d bytes", limit)
			}
			out = append(out, ev.Data...)
		}
		if ev.Exited {
			return out, ev.Code, nil
		}
	}
}

// arch asks the sprite what it runs on.
func (p *agentPool) arch(ctx context.Context, c *sprites.Client) (string, error) {
	sess, err := c.Exec(ctx, p.sprite, sprites.ExecOptions{Cmd: []string{"uname", "-m"}})
	if err != nil {
		return "", err
	}
	defer sess.Close()
	out, _, err := collect(ctx, sess, maxUname)
	if err != nil {
		return "", err
	}
	switch m := strings.TrimSpace(string(out)); m {
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
