package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Replace stops the agent recorded in pidfile, if it is still running, so a
// new deployment can take its port. It waits up to wait for it to exit.
func Replace(ctx context.Context, pidfile string, wait time.Duration, log zerolog.Logger) error {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return nil // none recorded
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || pid == os.Getpid() {
		return nil
	}
	// Only an agent: a recycled pid may belong to anything by now.
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || !strings.Contains(string(cmdline), "agent") {
		return nil
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	log.Info().Int("pid", pid).Msg("replacing the running agent")
	_ = p.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if p.Signal(syscall.Signal(0)) != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = p.Signal(syscall.SIGKILL)
	return nil
}

// writePIDFile records this process's pid.
func writePIDFile(pidfile string) error {
	return os.WriteFile(pidfile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600)
}

// pidFile is where an agent records itself: beside its secret.
func pidFile(secretFile string) string {
	if secretFile == "-" {
		return "agent.pid"
	}
	return filepath.Join(filepath.Dir(secretFile), "agent.pid")
}
