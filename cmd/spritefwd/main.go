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
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	buildversion "github.com/spritefwd/spritefwd/internal/version"
)

// version and commit are set by release builds (the Makefile, GoReleaser)
// with -ldflags "-X main.version=... -X main.commit=HASH[+dirty]".
var version, commit string

func versionString() string { return buildversion.Of(version) }

// exitError carries a process exit code up to main.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// command is one subcommand: how usage shows it and what runs it. dispatch
// and usage both read commands, so neither can miss one.
type command struct {
	name  string
	usage string // the synopsis line after "spritefwd "; a second line may follow
	run   func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run [--config FILE]            run the daemon in the foreground", func(a []string, _, e io.Writer) error { return cmdRun(a, e) }},
		{"forward", "forward SPRITE [LOCAL:]REMOTE… ad hoc forwards, like kubectl port-forward", func(a []string, _, e io.Writer) error { return cmdForward(a, e) }},
		{"stdio", "stdio SPRITE PORT              stdin/stdout to a port in a sprite, for ssh's ProxyCommand", func(a []string, o, e io.Writer) error {
			return cmdStdio(a, os.Stdin, o, e)
		}},
		{"ssh-config", "ssh-config                     print a ~/.ssh/config block: ssh NAME.sprite reaches sprite NAME", cmdSSHConfig},
		{"validate", "validate [--config FILE]       check a config file; exit 1 with file:line:col errors", cmdValidate},
		{"status", "status [--json] [-w]           every forward: state, sprite, connections, bytes, last error", cmdStatus},
		{"reload", "reload                         re-read the running daemon's config file now", cmdReload},
		{"service", "service install [--user] --config FILE\n" +
			"                                           install as a system service (also uninstall, start, stop,\n" +
			"                                           restart, status)", cmdService},
		{"sim", "sim [flags]                    run the Sprites API emulator", cmdSim},
		{"demo", "demo                           emulator + forwards to a demo sprite, to try it out", cmdDemo},
		{"agent", "agent --listen ADDR --secret-file FILE\n" +
			"                                           the in-sprite side of mode: mux (deployed by the daemon)", cmdAgent},
		{"completion", "completion bash|zsh|fish       print a shell completion script", cmdCompletion},
		{"version", "version                        print the version, commit and Go version", func(_ []string, o, _ io.Writer) error {
			fmt.Fprintln(o, "spritefwd", buildversion.Read(version, commit))
			return nil
		}},
	}
}

func usage() string {
	var b strings.Builder
	b.WriteString("spritefwd forwards local TCP ports to ports inside Sprites.dev sprites.\n\nUsage:\n")
	for _, c := range commands() {
		b.WriteString("  spritefwd " + c.usage + "\n")
	}
	b.WriteString("\nRun 'spritefwd COMMAND --help' for a command's flags.\n")
	b.WriteString("The token comes from $SPRITES_TOKEN or token_file, never from the command line.\n")
	return b.String()
}

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
		fmt.Fprint(stderr, usage())
		return &exitError{code: 2}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "--version":
		name = "version"
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage())
		return nil
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(rest, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "spritefwd: unknown command %q\n\n%s", name, usage())
	return &exitError{code: 2}
}

// newFlags returns a FlagSet whose --help prints the command's summary.
func newFlags(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if o, ok := stderr.(flagObserver); ok {
		o.observe(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", strings.TrimSpace(summary))
		fs.PrintDefaults()
	}
	return fs
}

// flagObserver is a writer that wants to see each FlagSet that writes to
// it: TestHelp checks every registered flag against the help text.
type flagObserver interface{ observe(*flag.FlagSet) }

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
