package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/tunnel"
)

const runHelp = `spritefwd run [--config FILE]: run the daemon in the foreground.

Reads forward rules from FILE and serves them until SIGINT or SIGTERM, then
gives open connections shutdown_grace to finish. SIGHUP re-reads FILE: a bad
edit is rejected with file:line:col and the running config keeps serving.`

func cmdRun(args []string, stderr io.Writer) error {
	fs := newFlags("run", runHelp, stderr)
	path := fs.String("config", config.DefaultPath(), "config file")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, msg: fmt.Sprintf("run: unexpected argument %q", fs.Arg(0))}
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
	return runDaemon(log, cfg, func() (*config.Config, error) { return config.Load(abs) })
}

const forwardHelp = `spritefwd forward SPRITE [LOCAL:]REMOTE ...: forward ports without a config file.

Like kubectl port-forward: 5432 forwards local 5432 to the sprite's 5432,
8080:3000 forwards local 8080 to the sprite's 3000, and :3000 picks any free
local port. The token comes from $SPRITES_TOKEN or --token-file.`

func cmdForward(args []string, stderr io.Writer) error {
	fs := newFlags("forward", forwardHelp, stderr)
	cfg := config.Default()
	fs.StringVar(&cfg.APIURL, "api-url", cfg.APIURL, "Sprites API base URL (http://127.0.0.1:7070 for the emulator)")
	fs.StringVar(&cfg.TokenFile, "token-file", cfg.TokenFile, "file holding the API token, if $SPRITES_TOKEN is unset")
	fs.DurationVar(&cfg.Keepalive, "keepalive", cfg.Keepalive, "ping interval on live links")
	fs.DurationVar(&cfg.WakeTimeout, "wake-timeout", cfg.WakeTimeout, "how long a new connection may wait for the sprite to wake")
	address := fs.String("address", config.DefaultBind, "local address to listen on (localhost means 127.0.0.1 and ::1)")
	allowPublic := fs.Bool("allow-public", false, "allow a non-loopback --address")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		fs.Usage()
		return &exitError{code: 2, msg: "forward: want SPRITE and at least one [LOCAL:]REMOTE port"}
	}
	log, err := lf.logger(os.Stderr)
	if err != nil {
		return err
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
		cfg.Forwards = append(cfg.Forwards, f)
	}
	// Round-trip through the validator, so ad hoc rules get the same checks.
	if err := config.Validate(cfg); err != nil {
		return &exitError{code: 2, msg: err.Error()}
	}
	return runDaemon(log, cfg, nil)
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

// runDaemon serves cfg until SIGINT or SIGTERM. SIGHUP calls reload, if
// set, and applies the result only if it is valid.
func runDaemon(log zerolog.Logger, cfg *config.Config, reload func() (*config.Config, error)) error {
	logFileLimit(log)
	d := tunnel.New(tunnel.Options{Log: log, UserAgent: "spritefwd/" + versionString()})
	if err := d.Apply(cfg); err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	log.Info().Str("config", cfg.File).Int("forwards", len(cfg.Forwards)).Str("api_url", cfg.APIURL).Msg("spritefwd running")
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			if reload == nil {
				log.Info().Msg("SIGHUP ignored: no config file to reload")
				continue
			}
			applyReload(log, d, reload)
			continue
		}
		grace := d.Config().ShutdownGrace
		log.Info().Str("signal", sig.String()).Stringer("grace", grace).Msg("shutting down; a second signal exits at once")
		go func() {
			<-sigs
			log.Warn().Msg("second signal: exiting without waiting")
			os.Exit(130)
		}()
		d.Shutdown(grace)
		return nil
	}
	return nil
}

func applyReload(log zerolog.Logger, d *tunnel.Daemon, reload func() (*config.Config, error)) {
	cfg, err := reload()
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			for _, e := range es {
				log.Error().Str("at", fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Col)).Msg("config rejected: " + e.Error())
			}
		} else {
			log.Error().Err(err).Msg("config rejected; the running config keeps serving")
		}
		return
	}
	if err := d.Apply(cfg); err != nil {
		log.Error().Err(err).Msg("config rejected; the running config keeps serving")
		return
	}
	log.Info().Int("forwards", len(cfg.Forwards)).Msg("config reloaded")
}
