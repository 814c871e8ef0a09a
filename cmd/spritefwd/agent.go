package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spritefwd/spritefwd/agent"
)

const agentSummary = `spritefwd agent --listen 127.0.0.1:PORT --secret-file FILE

Runs inside a sprite for mode: mux. The daemon deploys and starts it; you
do not run it yourself. It serves yamux sessions from the daemon (only
those that prove the deployment secret) and connects each stream to a
loopback port inside the sprite. It prints one JSON line on stdout once it
listens.`

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func cmdAgent(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("agent", agentSummary, stderr)
	listen := fs.String("listen", "127.0.0.1:7022", "where the daemon's proxy links arrive")
	secretFile := fs.String("secret-file", "", "file holding the deployment secret (mode 0600), or - for stdin")
	replace := fs.Bool("replace", false, "stop the agent recorded in the pid file next to the secret, and take its port")
	var allow stringList
	fs.Var(&allow, "allow-host", "a target host allowed besides loopback (repeatable)")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secretFile == "" {
		return &exitError{code: 2, msg: "spritefwd agent: --secret-file is required"}
	}
	log, err := lf.logger(os.Stderr)
	if err != nil {
		return err
	}
	secret, err := agent.ReadSecret(*secretFile, os.Stdin)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Options{Secret: secret, AllowHosts: allow, Log: log})
	if err != nil {
		return err
	}
	dir := "."
	if *secretFile != "-" {
		dir = filepath.Dir(*secretFile)
	}
	pidfile := filepath.Join(dir, "agent.pid")
	if *replace {
		if err := agent.Replace(pidfile, 3*time.Second); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	signal.Ignore(syscall.SIGHUP) // the exec session that started us may go away
	ln, err := agent.ListenRetry(ctx, *listen, 5*time.Second)
	if err != nil {
		return fmt.Errorf("agent: listen %s: %w", *listen, err)
	}
	if err := os.WriteFile(pidfile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600); err != nil {
		log.Warn().Err(err).Msg("could not write the pid file; a redeploy cannot replace this agent")
	}
	if err := agent.WriteReady(stdout, agent.Ready{Ready: true, Listen: ln.Addr().String(), Version: versionString(), PID: os.Getpid()}); err != nil {
		return err
	}
	log.Info().Str("listen", ln.Addr().String()).Strs("allow_hosts", allow).Msg("agent listening")
	err = a.Serve(ctx, ln)
	log.Info().Msg("agent stopped")
	return err
}
