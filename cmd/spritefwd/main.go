// Command spritefwd forwards local TCP ports to ports inside Sprites.dev
// sandboxes: it wakes a sleeping sprite when a client connects, keeps live
// links pinged, and recovers when sleep or the network drops a link.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// version is set by the Makefile with -ldflags "-X main.version=...".
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// exitError carries a process exit code up to main.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

const usage = `spritefwd forwards local TCP ports to ports inside Sprites.dev sprites.

Usage:
  spritefwd run [--config FILE]            run the daemon in the foreground
  spritefwd forward SPRITE [LOCAL:]REMOTE… ad hoc forwards, like kubectl port-forward
  spritefwd validate [--config FILE]       check a config file; exit 1 with file:line:col errors
  spritefwd status [--json] [-w]           every forward: state, sprite, connections, bytes, last error
  spritefwd reload                         re-read the running daemon's config file now
  spritefwd service install [--user] --config FILE
                                           install as a system service (also uninstall, start, stop,
                                           restart, status)
  spritefwd sim [flags]                    run the Sprites API emulator
  spritefwd demo                           emulator + forwards to a demo sprite, to try it out
  spritefwd agent --listen ADDR --secret-file FILE
                                           the in-sprite side of mode: mux (deployed by the daemon)
  spritefwd version                        print the version

Run 'spritefwd COMMAND --help' for a command's flags.
The token comes from $SPRITES_TOKEN or token_file, never from the command line.
`

func main() {
	err := dispatch(os.Args[1:], os.Stdout, os.Stderr)
	var ee *exitError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, ee.msg)
		}
		os.Exit(ee.code)
	default:
		fmt.Fprintln(os.Stderr, "spritefwd:", err)
		os.Exit(1)
	}
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stderr)
	case "forward":
		return cmdForward(rest, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "status":
		return cmdStatus(rest, stdout, stderr)
	case "reload":
		return cmdReload(rest, stdout, stderr)
	case "service":
		return cmdService(rest, stdout, stderr)
	case "sim":
		return cmdSim(rest, stdout, stderr)
	case "demo":
		return cmdDemo(rest, stdout, stderr)
	case "agent":
		return cmdAgent(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "spritefwd", versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "spritefwd: unknown command %q\n\n%s", cmd, usage)
	return &exitError{code: 2}
}

// newFlags returns a FlagSet whose --help prints the command's summary.
func newFlags(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", strings.TrimSpace(summary))
		fs.PrintDefaults()
	}
	return fs
}

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	level  string
	format string
	file   string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "auto", "log format: auto (console on a terminal, JSON otherwise), console or json")
	fs.StringVar(&l.file, "log-file", "", "append logs to this file instead of stderr (JSON unless --log-format console)")
}

// logger writes human-readable lines on a terminal and JSON under a
// service manager, whose journal captures stderr.
func (l *logFlags) logger(w *os.File) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(l.level)
	if err != nil || l.level == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	var out io.Writer = w
	if l.file != "" {
		if err := os.MkdirAll(filepath.Dir(l.file), 0o700); err != nil {
			return zerolog.Nop(), err
		}
		f, err := os.OpenFile(l.file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return zerolog.Nop(), fmt.Errorf("--log-file: %w", err)
		}
		out, w = f, f
	}
	switch l.format {
	case "json":
	case "console":
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	case "auto":
		if isatty.IsTerminal(w.Fd()) {
			out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: want auto, console or json", l.format)
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger(), nil
}
