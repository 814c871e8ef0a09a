package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/control"
	"github.com/spritefwd/spritefwd/sock"
	"github.com/spritefwd/spritefwd/tunnel"
)

const stdioHelp = `spritefwd stdio [--suffix .sprite] SPRITE PORT: connect stdin and stdout to PORT inside SPRITE.

For ssh's ProxyCommand: ssh -o ProxyCommand='spritefwd stdio %h 22' db
reaches port 22 in sprite db with no local port (see spritefwd ssh-config).
When the daemon runs, it carries the connection (its mode, warm links,
resumption; status and metrics show it as "stdio SPRITE:PORT"); otherwise
the connection is made in this process from the same config and token.
Settings come from a forward to the same sprite and port, if the config has
one, else from the config's defaults. Exits 0 only when the connection ended
cleanly; a failure, or a link that broke after data, exits 1 with one line
on stderr that says what happened.`

func cmdStdio(args []string, stdin io.Reader, stdout io.Writer, stderr io.Writer) error {
	fs := newFlags("stdio", stdioHelp, stderr)
	path := fs.String("config", config.DefaultPath(), "config file (without a running daemon; missing means the defaults)")
	socket := fs.String("socket", control.DefaultSocket(), "the daemon's control socket")
	suffix := fs.String("suffix", "", "strip this suffix from SPRITE (for Host *.sprite in ~/.ssh/config)")
	verbose := fs.Bool("v", false, "say on stderr how the connection is made, and log without a daemon")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return &exitError{code: 2, msg: "stdio: want SPRITE and PORT, as in: spritefwd stdio db 22"}
	}
	sprite := fs.Arg(0)
	if *suffix != "" {
		sprite = strings.TrimSuffix(sprite, *suffix)
	}
	sprite, port, err := control.ParseTarget(sprite + ":" + fs.Arg(1))
	if err != nil {
		return &exitError{code: 2, msg: "stdio: " + err.Error()}
	}
	fail := func(err error) error {
		return &exitError{code: 1, msg: fmt.Sprintf("spritefwd stdio %s:%d: %v", sprite, port, err)}
	}
	say := func(format string, a ...any) {
		if *verbose {
			fmt.Fprintf(stderr, "spritefwd stdio: "+format+"\n", a...)
		}
	}

	ctx := context.Background()
	var (
		conn sock.Conn
		end  func() error
	)
	c := control.NewClient(*socket)
	defer c.Close()
	dc, err := c.Connect(ctx, sprite, port)
	switch {
	case err == nil:
		say("through the daemon at %s", *socket)
		conn = dc
		end = func() error {
			ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return dc.End(ectx)
		}
	case errors.Is(err, control.ErrNotRunning):
		say("no daemon at %s; connecting in this process", *socket)
		d, err := inProcess(*path, *verbose, stderr)
		if err != nil {
			return fail(err)
		}
		defer d.Shutdown(time.Second)
		mine, theirs, err := socketPair()
		if err != nil {
			return fail(err)
		}
		defer mine.Close()
		ended := make(chan error, 1)
		if err := d.Carry(tunnel.FrontStdio, sprite, port, theirs, func(err error) { ended <- err }); err != nil {
			return fail(err)
		}
		conn, end = mine, func() error { return <-ended }
	default:
		return fail(err)
	}
	if err := pump(conn, stdin, stdout); err != nil {
		if eerr := end(); eerr != nil {
			return fail(eerr)
		}
		return fail(err)
	}
	if err := end(); err != nil {
		return fail(err)
	}
	return nil
}

// pump copies stdin to conn and conn to stdout until conn ends: stdin's
// EOF half-closes conn, and the sprite's replies keep coming.
func pump(conn sock.Conn, stdin io.Reader, stdout io.Writer) error {
	go func() {
		if _, err := io.Copy(conn, stdin); err == nil {
			_ = conn.CloseWrite()
		}
	}()
	_, err := io.Copy(stdout, conn)
	if c, ok := stdout.(io.Closer); ok {
		_ = c.Close() // the reader (ssh) sees the end now, not at exit
	}
	return err
}

// inProcess starts an engine that serves fronts only, from the config at
// path (the defaults if there is none) and the token.
func inProcess(path string, verbose bool, stderr io.Writer) (*tunnel.Daemon, error) {
	cfg, err := config.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		cfg, err = config.Default(), nil
	}
	if err != nil {
		return nil, err
	}
	log := zerolog.Nop()
	if verbose {
		log = zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	}
	// The state directory holds the agent's record: each ssh that runs
	// stdio is a fresh process, and without it each would look into the
	// sprite for the agent's secret before its first byte.
	d := tunnel.New(tunnel.Options{Log: log, UserAgent: "spritefwd/" + versionString(), AgentBinary: agentBinary, NoListeners: true,
		StateDir: config.DefaultStateDir(os.Getenv)})
	if err := d.Apply(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

const sshConfigHelp = `spritefwd ssh-config [--suffix .sprite] [--port 22]: print a block for ~/.ssh/config.

After pasting it, ssh db.sprite reaches port 22 in sprite db through
spritefwd stdio, and so do scp, rsync -e ssh and git over ssh.`

func cmdSSHConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ssh-config", sshConfigHelp, stderr)
	suffix := fs.String("suffix", ".sprite", "host names ending in this suffix are sprites")
	port := fs.Int("port", 22, "the port sshd listens on inside the sprites")
	self := fs.String("path", "", "the spritefwd to run (default: this one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, msg: fmt.Sprintf("ssh-config: unexpected argument %q", fs.Arg(0))}
	}
	if !strings.HasPrefix(*suffix, ".") || strings.ContainsAny(*suffix, " \t*?%") {
		return &exitError{code: 2, msg: fmt.Sprintf("ssh-config: --suffix %q: want a domain suffix such as .sprite", *suffix)}
	}
	exe := *self
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			exe = "spritefwd"
		}
	}
	fmt.Fprint(stdout, sshConfig(exe, *suffix, *port))
	return nil
}

// sshConfig is the ~/.ssh/config block: %h is the name as typed (no
// HostName line changes it), and stdio strips the suffix.
func sshConfig(exe, suffix string, port int) string {
	return fmt.Sprintf(`# spritefwd: ssh NAME%[2]s reaches sprite NAME (added by spritefwd ssh-config)
Host *%[2]s
    ProxyCommand %[1]s stdio --suffix %[2]s %%h %[3]s
    # The host key is the sprite's; ssh remembers it under NAME%[2]s.
`, shellQuote(exe), suffix, strconv.Itoa(port))
}

// shellQuote quotes a path for ProxyCommand, which ssh runs with the
// user's shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
