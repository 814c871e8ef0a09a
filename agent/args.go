package agent

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Command is the word before the agent's flags: the daemon's subcommand,
// which the agent-only build accepts and skips, so that one argv starts
// either binary.
const Command = "agent"

// Defaults of the flags the daemon may leave out.
const (
	DefaultListen    = "127.0.0.1:7022"
	DefaultLogLevel  = "info"
	DefaultLogFormat = "auto"
)

// Args is the agent's command line. The daemon writes it with Argv and the
// agent reads it with ParseArgs, so that the two cannot drift apart.
type Args struct {
	Listen     string
	SecretFile string
	// Replace stops the agent recorded in the pid file first, and only if
	// that process is still that agent.
	Replace    bool
	AllowHosts []string
	LogFile    string
	LogLevel   string
	LogFormat  string
}

// Argv is the command line after Command, the fields left empty omitted.
func (a Args) Argv() []string {
	var v []string
	add := func(flag, value string) {
		if value != "" {
			v = append(v, "--"+flag, value)
		}
	}
	add("listen", a.Listen)
	add("secret-file", a.SecretFile)
	if a.Replace {
		v = append(v, "--replace")
	}
	for _, h := range a.AllowHosts {
		add("allow-host", h)
	}
	add("log-file", a.LogFile)
	add("log-level", a.LogLevel)
	add("log-format", a.LogFormat)
	return v
}

const usage = `spritefwd agent --listen 127.0.0.1:PORT --secret-file FILE
spritefwd-agent [agent] --listen 127.0.0.1:PORT --secret-file FILE

Runs inside a sprite for mode: mux. The daemon deploys and starts it; you
do not run it yourself. It serves yamux sessions from the daemon (only
those that prove the deployment secret) and connects each stream to a
loopback port inside the sprite. It prints one JSON line on stdout once it
listens. spritefwd-agent is the agent-only build, which the daemon uploads
when it has one; both take the same flags.`

// UsageError is a command line the agent cannot run with: exit status 2.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

// ParseArgs reads the agent's command line, with or without Command in
// front. Its --help and its flag errors go to stderr; --help returns an
// error that wraps flag.ErrHelp.
func ParseArgs(argv []string, stderr io.Writer) (Args, error) {
	if len(argv) > 0 && argv[0] == Command {
		argv = argv[1:]
	}
	fs := flag.NewFlagSet(Command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	var a Args
	fs.StringVar(&a.Listen, "listen", DefaultListen, "where the daemon's proxy links arrive")
	fs.StringVar(&a.SecretFile, "secret-file", "", "file holding the deployment secret (mode 0600), or - for stdin")
	fs.BoolVar(&a.Replace, "replace", false, "stop the agent recorded in the pid file next to the secret (only if that process is still that agent), and take its port")
	fs.Func("allow-host", "a target host allowed besides loopback (repeatable)", func(v string) error {
		a.AllowHosts = append(a.AllowHosts, v)
		return nil
	})
	fs.StringVar(&a.LogFile, "log-file", "", "append logs to this file instead of stderr (JSON unless --log-format console)")
	fs.StringVar(&a.LogLevel, "log-level", DefaultLogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&a.LogFormat, "log-format", DefaultLogFormat, "log format: auto (console on a terminal, JSON otherwise), console or json")
	if err := fs.Parse(argv); err != nil {
		return Args{}, err
	}
	if fs.NArg() > 0 {
		return Args{}, &UsageError{fmt.Sprintf("spritefwd agent: unexpected argument %q", fs.Arg(0))}
	}
	if a.SecretFile == "" {
		return Args{}, &UsageError{"spritefwd agent: --secret-file is required"}
	}
	return a, nil
}

// Ready is the line the agent prints on stdout once it listens, which the
// daemon waits for after starting it.
type Ready struct {
	Ready   bool   `json:"ready"`
	Listen  string `json:"listen"`
	Version string `json:"version"`
	PID     int    `json:"pid"`
	// PortHeld, with Ready false, is the line printed instead when another
	// process holds the port: something the daemon did not deploy, which
	// it should leave alone and move away from, rather than retry.
	PortHeld bool `json:"port_held,omitempty"`
}

// WriteReady prints the ready line.
func WriteReady(w io.Writer, r Ready) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// ParsePortHeld reports the line an agent prints when another process
// holds its port.
func ParsePortHeld(line []byte) bool {
	var r Ready
	return json.Unmarshal([]byte(strings.TrimSpace(string(line))), &r) == nil && !r.Ready && r.PortHeld
}

// ParseReady reads one line of the agent's stdout. Anything else the
// binary might print first is not a ready line, not an error.
func ParseReady(line []byte) (Ready, bool) {
	var r Ready
	if json.Unmarshal([]byte(strings.TrimSpace(string(line))), &r) != nil || !r.Ready {
		return Ready{}, false
	}
	return r, true
}
