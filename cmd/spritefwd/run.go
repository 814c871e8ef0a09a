package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/control"
	svc "github.com/spritefwd/spritefwd/service"
)

const runHelp = `spritefwd run [--config FILE]: run the daemon in the foreground.

Reads forward rules from FILE and serves them until SIGINT or SIGTERM, then
gives open connections shutdown_grace to finish. SIGHUP re-reads FILE: a bad
edit is rejected with file:line:col and the running config keeps serving.`

func cmdRun(args []string, stderr io.Writer) error {
	fs := newFlags("run", runHelp, stderr)
	path := fs.String("config", config.DefaultPath(), "config file")
	socket := fs.String("socket", control.DefaultSocket(), "control socket for status and reload (mode 0600)")
	noWatch := fs.Bool("no-watch", false, "do not reload when the config file changes (SIGHUP and reload still work)")
	allowRoot := fs.Bool("allow-root", false, "run as root; spritefwd needs no privileges, so only a system service should")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, msg: fmt.Sprintf("run: unexpected argument %q", fs.Arg(0))}
	}
	if os.Geteuid() == 0 && !*allowRoot {
		return &exitError{code: 2, msg: "run: refusing to run as root: spritefwd needs no privileges. Run it as your user, or install it with 'spritefwd service install' (a system service passes --allow-root)"}
	}
	log, err := lf.logger(os.Stderr)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(*path)
	if err != nil {
		return err
	}
	cfg, err := config.Load(abs)
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	r := newRunner(runnerOptions{log: log, configPath: abs, cfg: cfg, socket: *socket, watch: !*noWatch, root: os.Geteuid() == 0})
	if !svc.Interactive() && runtime.GOOS == "windows" {
		// The Windows service manager drives Start and Stop itself.
		s, err := svc.New(svc.Options{ConfigPath: abs}, r)
		if err != nil {
			return err
		}
		return s.Run()
	}
	return runDaemon(log, r)
}

const forwardHelp = `spritefwd forward SPRITE [LOCAL:]REMOTE ...: forward ports without a config file.
       spritefwd forward --auto SPRITE [[LOCAL:]REMOTE ...]: and every port the sprite listens on.

Like kubectl port-forward: 5432 forwards local 5432 to the sprite's 5432,
8080:3000 forwards local 8080 to the sprite's 3000, and :3000 picks any free
local port. The token comes from $SPRITES_TOKEN or --token-file. With --mux,
connections ride one link to an agent that spritefwd deploys into the sprite,
and survive a dropped link (see the README's Mux mode). With --auto, each
port the sprite listens on (1024 and up, narrowed by --only and --exclude)
gets a local listener on the same port, or the next free one, while the
sprite is in use (see the README's Auto-forward).`

func cmdForward(args []string, stderr io.Writer) error {
	fs := newFlags("forward", forwardHelp, stderr)
	cfg := config.Default()
	fs.StringVar(&cfg.APIURL, "api-url", cfg.APIURL, "Sprites API base URL (http://127.0.0.1:7070 for the emulator)")
	fs.BoolVar(&cfg.AllowInsecureHTTP, "allow-insecure-http", false, "allow an http:// --api-url that is not loopback, which sends the token in clear")
	fs.StringVar(&cfg.TokenFile, "token-file", cfg.TokenFile, "file holding the API token, if $SPRITES_TOKEN is unset")
	fs.DurationVar(&cfg.Keepalive, "keepalive", cfg.Keepalive, "ping interval on live links")
	fs.DurationVar(&cfg.WakeTimeout, "wake-timeout", cfg.WakeTimeout, "how long a new connection may wait for the sprite to wake")
	address := fs.String("address", config.DefaultBind, "local address to listen on (localhost means 127.0.0.1 and ::1)")
	allowPublic := fs.Bool("allow-public", false, "allow a non-loopback --address")
	socket := fs.String("socket", "", "serve status on this control socket (default: none, so it never clashes with a daemon)")
	muxMode := fs.Bool("mux", false, "carry connections as streams to an agent in the sprite (mode: mux)")
	fs.StringVar(&cfg.AgentBinary, "agent-binary", "", "with --mux: the linux agent to upload ({arch} becomes amd64 or arm64)")
	fs.IntVar(&cfg.AgentPort, "agent-port", cfg.AgentPort, "with --mux: the agent's port inside the sprite")
	auto := fs.Bool("auto", false, "also forward every port the sprite listens on (auto_forward)")
	only := fs.String("only", "", "with --auto: only these ports and ranges, such as 3000-3999,9229")
	exclude := fs.String("exclude", "", "with --auto: never these ports and ranges")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 && !(*auto && fs.NArg() == 1) {
		fs.Usage()
		return &exitError{code: 2, msg: "forward: want SPRITE and at least one [LOCAL:]REMOTE port, or --auto SPRITE"}
	}
	if (*only != "" || *exclude != "") && !*auto {
		return &exitError{code: 2, msg: "forward: --only and --exclude narrow --auto; add --auto"}
	}
	log, err := lf.logger(os.Stderr)
	if err != nil {
		return err
	}
	if err := config.CheckAPIURL(cfg.APIURL, cfg.AllowInsecureHTTP); errors.Is(err, config.ErrPlainHTTP) {
		return &exitError{code: 2, msg: fmt.Sprintf("forward: --api-url %v; use https://, or pass --allow-insecure-http if you mean it", err)}
	} else if err != nil {
		return &exitError{code: 2, msg: fmt.Sprintf("forward: --api-url %v", err)}
	}
	sprite := fs.Arg(0)
	bind := *address
	if strings.Contains(bind, ":") {
		bind = "[" + bind + "]"
	}
	for _, spec := range fs.Args()[1:] {
		local, remote, ok := strings.Cut(spec, ":")
		if !ok {
			local, remote = spec, spec
		}
		if local == "" {
			local = "0"
		}
		f, err := config.ParseRule(bind + ":" + local + ":" + sprite + ":" + remote)
		if err != nil {
			return &exitError{code: 2, msg: fmt.Sprintf("forward: %s: %v", spec, err)}
		}
		f.AllowPublic = *allowPublic
		if *muxMode {
			f.Mode = config.Mux
		}
		cfg.Forwards = append(cfg.Forwards, f)
	}
	if *auto {
		a := config.AutoForward{On: true, Listen: *address}
		for _, ps := range []struct {
			flag, text string
			set        *config.PortSet
		}{{"only", *only, &a.Only}, {"exclude", *exclude, &a.Exclude}} {
			if ps.text == "" {
				continue
			}
			set, err := config.ParsePortSet(ps.text)
			if err != nil {
				return &exitError{code: 2, msg: fmt.Sprintf("forward: --%s: %v", ps.flag, err)}
			}
			*ps.set = set
		}
		if ip := net.ParseIP(*address); *address != "localhost" && (ip == nil || !ip.IsLoopback()) && !*allowPublic {
			return &exitError{code: 2, msg: fmt.Sprintf("forward: --address %s is reachable from other machines; pass --allow-public if you mean it", *address)}
		}
		mode := config.DefaultMode
		if *muxMode {
			mode = config.Mux
		}
		cfg.AllowPublic = cfg.AllowPublic || *allowPublic
		cfg.Sprites = map[string]config.SpriteSettings{sprite: {Host: config.DefaultHost, KeepAwake: config.DefaultKeepAwake, Mode: mode, Auto: a}}
	}
	// Round-trip through the validator, so ad hoc rules get the same checks.
	if err := config.Validate(cfg); err != nil {
		return &exitError{code: 2, msg: err.Error()}
	}
	cfg.File = "command line"
	return runDaemon(log, newRunner(runnerOptions{log: log, cfg: cfg, socket: *socket, root: os.Geteuid() == 0}))
}

const validateHelp = `spritefwd validate [--config FILE]: check a config file.

Exits 0 if FILE is valid. Otherwise prints every problem as file:line:col:
message and exits 1.`

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", validateHelp, stderr)
	path := fs.String("config", config.DefaultPath(), "config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		*path = fs.Arg(0)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	fmt.Fprintf(stdout, "%s: ok, %d forward(s)\n", *path, len(cfg.Forwards))
	return nil
}

// runDaemon runs r until SIGINT or SIGTERM; SIGHUP reloads the config.
func runDaemon(log zerolog.Logger, r *runner) error {
	if err := r.Start(); err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			r.Reload()
			continue
		}
		log.Info().Str("signal", sig.String()).Msg("shutting down; a second signal exits at once")
		go func() {
			<-sigs
			log.Warn().Msg("second signal: exiting without waiting")
			os.Exit(130)
		}()
		return r.Stop()
	}
	return nil
}
