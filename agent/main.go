package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Main is the agent's whole program, for both binaries that carry it
// (spritefwd agent, and the agent-only spritefwd-agent): it parses argv,
// then runs until SIGINT or SIGTERM.
func Main(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer, version string) error {
	a, err := ParseArgs(argv, stderr)
	if err != nil {
		return err
	}
	log, closeLog, err := a.logger(stderr)
	if err != nil {
		return err
	}
	defer closeLog()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	signal.Ignore(syscall.SIGHUP) // the exec session that started us may go away
	return Run(ctx, a, stdin, stdout, log, version)
}

// Run serves as a: it replaces the previous agent if asked, listens,
// records itself in the pid file, prints the ready line and serves until
// ctx is done.
func Run(ctx context.Context, a Args, stdin io.Reader, stdout io.Writer, log zerolog.Logger, version string) error {
	secret, err := ReadSecret(a.SecretFile, stdin)
	if err != nil {
		return err
	}
	ag, err := New(Options{Secret: secret, AllowHosts: a.AllowHosts, ProcNet: procNet(os.Getenv), Log: log})
	if err != nil {
		return err
	}
	pidfile := pidFile(a.SecretFile)
	if a.Replace {
		if err := Replace(ctx, pidfile, 3*time.Second, log); err != nil {
			return err
		}
	}
	ln, err := ListenRetry(ctx, a.Listen, 5*time.Second)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// Not an agent of this deployment, which Replace would have
			// stopped: tell the daemon in a line it parses, not in stderr.
			_ = WriteReady(stdout, Ready{Listen: a.Listen, PortHeld: true})
		}
		return fmt.Errorf("agent: listen %s: %w", a.Listen, err)
	}
	if err := writePIDFile(pidfile); err != nil {
		log.Warn().Err(err).Msg("could not write the pid file; a redeploy cannot replace this agent")
	}
	if err := WriteReady(stdout, Ready{Ready: true, Listen: ln.Addr().String(), Version: version, PID: os.Getpid()}); err != nil {
		ln.Close()
		return err
	}
	log.Info().Str("listen", ln.Addr().String()).Strs("allow_hosts", a.AllowHosts).Msg("agent listening")
	err = ag.Serve(ctx, ln)
	log.Info().Msg("agent stopped")
	return err
}

// procNet is where the sprite's TCP tables are: /proc/net, unless
// $SPRITEFWD_PROC_NET names another directory, as the emulator does for
// its sprites, which share the machine's network.
func procNet(getenv func(string) string) string {
	if d := getenv("SPRITEFWD_PROC_NET"); d != "" {
		return d
	}
	return DefaultProcNet
}

// logger writes to --log-file if given, else stderr: human-readable lines
// on a terminal, JSON otherwise. The daemon's own logger takes the same
// flags; the agent-only build cannot import it.
func (a Args) logger(stderr io.Writer) (zerolog.Logger, func(), error) {
	level, err := zerolog.ParseLevel(a.LogLevel)
	if err != nil || a.LogLevel == "" {
		return zerolog.Nop(), nil, &UsageError{fmt.Sprintf("--log-level %q: want debug, info, warn or error", a.LogLevel)}
	}
	out, closeOut := stderr, func() {}
	if a.LogFile != "" {
		if err := os.MkdirAll(filepath.Dir(a.LogFile), 0o700); err != nil {
			return zerolog.Nop(), nil, err
		}
		f, err := os.OpenFile(a.LogFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return zerolog.Nop(), nil, fmt.Errorf("--log-file: %w", err)
		}
		out, closeOut = f, func() { f.Close() }
	}
	w := out
	switch a.LogFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	case "auto":
		if f, ok := out.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
		}
	default:
		closeOut()
		return zerolog.Nop(), nil, &UsageError{fmt.Sprintf("--log-format %q: want auto, console or json", a.LogFormat)}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), closeOut, nil
}
