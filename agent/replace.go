package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// process is what identifies one running process: a pid alone does not,
// since the kernel hands a dead agent's pid to whatever starts next
// (ssh-agent, gpg-agent...). The agent records it as JSON beside its pid
// file.
type process struct {
	PID int `json:"pid"`
	// Start is field 22 of /proc/PID/stat, clock ticks after boot: with the
	// pid, it names one process for the life of the machine.
	Start uint64   `json:"start"`
	Exe   string   `json:"exe"`
	Argv  []string `json:"argv"`
	Dir   string   `json:"dir"`
	// state is field 3 of /proc/PID/stat; Z is a zombie, already dead.
	state string
}

// same reports whether cur is the process that rec recorded. Each field
// must match: after a reboot of a VM that boots the same way each time,
// another process may well have the same pid and start tick.
func (rec process) same(cur process) bool {
	return rec.PID == cur.PID && rec.Start == cur.Start && rec.Start != 0 &&
		undeleted(rec.Exe) == undeleted(cur.Exe) && slices.Equal(rec.Argv, cur.Argv) &&
		undeleted(rec.Dir) == undeleted(cur.Dir)
}

// undeleted is a /proc link without the mark the kernel adds once the file
// is gone: a redeploy replaces the agent's executable while it runs.
func undeleted(link string) string { return strings.TrimSuffix(link, " (deleted)") }

// recordFile is beside the pid file, which holds the bare pid as it
// always has, for whoever else reads it: the record says which process
// that pid was.
func recordFile(pidfile string) string { return pidfile + ".json" }

// readPIDFile reads the pid file and its record. Without a record that
// names the same pid (none, or one left behind by an agent that an agent
// from before records replaced), the pid is legacy: known by pid alone.
func readPIDFile(pidfile string) (rec process, legacy bool, err error) {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return process{}, false, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return process{}, false, fmt.Errorf("pid file %s: %w", pidfile, err)
	}
	if b, err := os.ReadFile(recordFile(pidfile)); err == nil && json.Unmarshal(b, &rec) == nil && rec.PID == pid {
		return rec, false, nil
	}
	return process{PID: pid}, true, nil
}

// writePIDFile records this process: the record first, then the pid, each
// replaced whole, so that a concurrent Replace never reads half of one.
func writePIDFile(pidfile string) error {
	me, err := lookup(os.Getpid())
	if err != nil {
		return err
	}
	b, err := json.Marshal(me)
	if err != nil {
		return err
	}
	if err := writeWhole(recordFile(pidfile), append(b, '\n')); err != nil {
		return err
	}
	return writeWhole(pidfile, []byte(strconv.Itoa(me.PID)+"\n"))
}

func writeWhole(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// owned reports whether cur is the agent that the pid file recorded. A
// legacy pid has no record: then cur must run this very executable with
// this very command line in this directory, which is what the daemon runs
// on every deploy; that is the previous agent of this deployment, and no
// other program.
func owned(rec process, legacy bool, cur, me process) bool {
	if cur.state == "Z" || cur.state == "X" {
		return false // dead already; nothing to stop
	}
	if !legacy {
		return rec.same(cur)
	}
	return rec.PID == cur.PID && undeleted(cur.Exe) == undeleted(me.Exe) &&
		slices.Equal(cur.Argv, me.Argv) && undeleted(cur.Dir) == undeleted(me.Dir)
}

// Replace stops the agent recorded in pidfile, so that this one can take
// its port: SIGTERM, then SIGKILL if it has not exited within wait. It
// signals nothing but that agent. A pid file that names a process that is
// no longer that agent is left alone, with a log line.
func Replace(ctx context.Context, pidfile string, wait time.Duration, log zerolog.Logger) error {
	rec, legacy, err := readPIDFile(pidfile)
	if errors.Is(err, os.ErrNotExist) {
		return nil // none recorded
	}
	if err != nil {
		log.Warn().Err(err).Msg("not replacing: cannot read the pid file")
		return nil
	}
	if rec.PID <= 1 || rec.PID == os.Getpid() {
		return nil
	}
	me, err := lookup(os.Getpid())
	if err != nil {
		log.Warn().Err(err).Msg("not replacing: cannot tell our agent from other processes")
		return nil
	}
	// On Linux this holds a pidfd from here on, so the signals below reach
	// the process checked after it, never one that takes its pid later.
	p, err := os.FindProcess(rec.PID)
	if err != nil {
		return nil
	}
	defer p.Release()
	ours := func() bool {
		cur, err := lookup(rec.PID)
		return err == nil && owned(rec, legacy, cur, me)
	}
	if !ours() {
		if cur, err := lookup(rec.PID); err == nil {
			log.Info().Int("pid", rec.PID).Str("exe", cur.Exe).Msg("the pid file's process is no longer our agent; leaving it alone")
		}
		return nil
	}
	log.Info().Int("pid", rec.PID).Bool("recorded", !legacy).Msg("replacing the running agent")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil // gone already
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ours() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-deadline.C:
			if ours() { // again: it may have exited and its pid been reused meanwhile
				log.Warn().Int("pid", rec.PID).Stringer("after", wait).Msg("the old agent ignored SIGTERM; killing it")
				_ = p.Signal(syscall.SIGKILL)
			}
			return nil
		}
	}
	return nil
}

// pidFile is where an agent records itself: beside its secret.
func pidFile(secretFile string) string {
	if secretFile == "-" {
		return "agent.pid"
	}
	return filepath.Join(filepath.Dir(secretFile), "agent.pid")
}
