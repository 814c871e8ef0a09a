package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
	"github.com/spritefwd/spritefwd/tunnel"
)

const demoHelp = `spritefwd demo: try spritefwd with no account and no network.

Starts the embedded Sprites emulator with a sprite called "demo" that runs an
HTTP server (port 80) and an echo server (port 7), and forwards local ports to
them. The sprite falls asleep when idle; the next connection wakes it, and the
client only sees a slower connect. A third forward reaches the echo server in
mux mode: spritefwd deploys its agent into the sprite, and a connection there
survives the link being cut under it. Runs until Ctrl-C.`

func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", demoHelp, stderr)
	httpPort := fs.Int("http-port", 8080, "local port for the demo sprite's HTTP server (0: any free port)")
	echoPort := fs.Int("echo-port", 7777, "local port for the demo sprite's echo server (0: any free port)")
	muxPort := fs.Int("mux-port", 7778, "local port for the echo server in mux mode (0: any free port)")
	idle := fs.Duration("idle-sleep", 10*time.Second, "the demo sprite sleeps after this long without activity")
	wake := fs.Duration("wake-delay", 2*time.Second, "how long the demo sprite takes to wake")
	agentBin := fs.String("agent-binary", "", "linux agent to deploy into the demo sprite (default: spritefwd-linux-ARCH next to this binary, or this binary)")
	selftest := fs.Bool("selftest", false, "run the demo's steps itself, check each, and exit (used by the tests)")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := lf.logger(os.Stderr)
	if err != nil {
		return err
	}

	servers := &demoServers{}
	defer servers.close()
	var requests atomic.Int64
	httpAddr, err := servers.start(func(c net.Conn) { demoHTTP(c, &requests) })
	if err != nil {
		return err
	}
	echoAddr, err := servers.start(func(c net.Conn) { io.Copy(c, c) })
	if err != nil {
		return err
	}

	// The emulator's exec runs commands as this user: its token is new for
	// each run and lives in a file only this user can read, which the
	// banner names instead of printing the token.
	token, tokenFile, removeToken, err := spritestest.CreateTokenFile(spritestest.TokenDir(os.Getenv))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer removeToken()
	simLog := log.With().Str("component", "emulator").Logger()
	sim := spritestest.New(spritestest.Options{
		Token: token, IdleSleep: *idle, WakeDelay: *wake, Logger: &simLog,
		Faults: spritestest.Faults{ColdProxy: spritestest.ColdFail},
	})
	sim.Map("demo", 80, httpAddr)
	sim.Map("demo", 7, echoAddr)
	// The emulated sprite shares this machine's network: its agent reaches
	// the echo server on its real port. Mapped too, for the direct fallback.
	_, echoHostPort, _ := net.SplitHostPort(echoAddr)
	sim.Map("demo", atoi(echoHostPort), echoAddr)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sim.Start(ln)
	defer sim.Close()

	cfg := config.Default()
	cfg.File = "demo"
	cfg.APIURL = sim.URL
	cfg.Keepalive = 2 * time.Second
	cfg.WakeTimeout = 30 * time.Second
	cfg.ShutdownGrace = time.Second
	agentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cfg.AgentPort = agentLn.Addr().(*net.TCPAddr).Port
	agentLn.Close()
	cfg.AgentDir = "/tmp/spritefwd-demo"
	cfg.AgentBinary = *agentBin
	for _, r := range []string{fmt.Sprintf("%d:demo:80", *httpPort), fmt.Sprintf("%d:demo:7", *echoPort), fmt.Sprintf("%d:demo:%s", *muxPort, echoHostPort)} {
		f, err := config.ParseRule(r)
		if err != nil {
			return &exitError{code: 2, msg: err.Error()}
		}
		cfg.Forwards = append(cfg.Forwards, f)
	}
	cfg.Forwards[2].Mode, cfg.Forwards[2].Name = config.Mux, "demo-mux"
	d := tunnel.New(tunnel.Options{
		Log: log, UserAgent: "spritefwd/" + versionString(), AgentBinary: agentBinary,
		Getenv: func(k string) string {
			if k == config.TokenEnv {
				return token
			}
			return ""
		},
	})
	defer d.Shutdown(time.Second)
	if err := d.Apply(cfg); err != nil {
		return err
	}
	// A taken port should not spoil the demo: fall back to any free port.
	retry := false
	for i, st := range d.Status() {
		if st.State == tunnel.StateFailed {
			f, _ := config.ParseRule("0:demo:" + strings.TrimPrefix(st.Target, "demo:"))
			f.Name, f.Mode = cfg.Forwards[i].Name, cfg.Forwards[i].Mode
			cfg.Forwards[i] = f
			retry = true
		}
	}
	if retry {
		if err := d.Apply(cfg); err != nil {
			return err
		}
	}
	addrs := map[string]string{}
	for _, st := range d.Status() {
		if len(st.Addrs) > 0 {
			addrs[st.Target] = st.Addrs[0]
		}
	}
	web, echoL, muxL := addrs["demo:80"], addrs["demo:7"], addrs["demo:"+echoHostPort]

	if *selftest {
		return demoSelftest(log, sim, web, echoL, muxL)
	}
	fmt.Fprintf(stdout, `
spritefwd demo: the emulator runs a sprite "demo"; spritefwd forwards to it.

  curl http://%s/          # HTTP server inside the sprite
  nc %s %s             # echo server inside the sprite (type, then Ctrl-D)
  nc %s %s             # the same, in mux mode: through an agent in the sprite

The sprite sleeps after %s without traffic. The next request wakes it: it
takes %s and the client just waits. Watch the log below. Ctrl-C to stop.
In the mux nc, cut the link and keep typing; the session carries on:
  curl -X POST -H "Authorization: Bearer $(cat %s)" %s/_sim/sprites/demo/drop-links
The emulator's exec runs commands as you on this machine; its token is new
for this run, in that file (mode 0600), which is removed when the demo ends.

`, web, strings.Split(echoL, ":")[0], strings.Split(echoL, ":")[1], strings.Split(muxL, ":")[0], strings.Split(muxL, ":")[1],
		*idle, *wake, tokenFile, sim.URL)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	watchSprite(ctx, log, sim, "demo")
	return nil
}

// watchSprite logs the demo sprite's state changes, read from the emulator.
func watchSprite(ctx context.Context, log zerolog.Logger, sim *spritestest.Server, name string) {
	last := ""
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, _ := sim.SpriteStats(name)
		if st.State != last {
			log.Info().Str("sprite", name).Str("state", st.State).Int64("wakes", st.Wakes).Msg("sprite state")
			last = st.State
		}
	}
}

// demoSelftest does what the banner tells a person to do, and checks it.
func demoSelftest(log zerolog.Logger, sim *spritestest.Server, web, echoAddr, muxAddr string) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	get := func() error {
		resp, err := client.Get("http://" + web + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), "hello from inside sprite demo") {
			return fmt.Errorf("unexpected body %q", body)
		}
		return nil
	}
	if err := get(); err != nil {
		return fmt.Errorf("demo: curl through the forward: %w", err)
	}
	c, err := net.Dial("tcp", echoAddr)
	if err != nil {
		return err
	}
	fmt.Fprintln(c, "hello sprite")
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || line != "hello sprite\n" {
		return fmt.Errorf("demo: echo through the forward: %q, %v", line, err)
	}
	// Mux: one connection, the link cut in the middle, the same session on.
	mc, err := net.Dial("tcp", muxAddr)
	if err != nil {
		return err
	}
	defer mc.Close()
	mc.SetDeadline(time.Now().Add(30 * time.Second))
	mr := bufio.NewReader(mc)
	for i, msg := range []string{"before the cut", "after the cut"} {
		if i == 1 {
			sim.DropLinks("demo")
		}
		fmt.Fprintln(mc, msg)
		if line, err := mr.ReadString('\n'); err != nil || line != msg+"\n" {
			return fmt.Errorf("demo: mux echo %q: %q, %v", msg, line, err)
		}
	}
	mc.Close()
	if err := sim.Sleep("demo"); err != nil {
		return err
	}
	start := time.Now()
	if err := get(); err != nil {
		return fmt.Errorf("demo: curl after sleep: %w", err)
	}
	st, _ := sim.SpriteStats("demo")
	if st.Wakes < 1 {
		return errors.New("demo: the sprite never woke")
	}
	log.Info().Stringer("wake_wait", time.Since(start).Round(time.Millisecond)).Msg("demo selftest passed")
	return nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// demoHTTP serves one connection; requests numbers the replies.
func demoHTTP(c net.Conn, requests *atomic.Int64) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from inside sprite demo (request %d, %s %s)\n", requests.Add(1), r.Method, r.URL.Path)
	})}
	srv.Serve(&oneConnListener{c: c, done: make(chan struct{})})
}

// demoServers are the programs "inside" the demo sprite.
type demoServers struct {
	mu  sync.Mutex
	lns []net.Listener
	wg  sync.WaitGroup
}

func (s *demoServers) start(handle func(net.Conn)) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String(), nil
}

func (s *demoServers) close() {
	s.mu.Lock()
	for _, ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// oneConnListener serves exactly one connection through http.Server.
type oneConnListener struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = &closeNotify{Conn: l.c, done: l.done} })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

type closeNotify struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *closeNotify) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}
