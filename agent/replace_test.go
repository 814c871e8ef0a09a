package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/mux"
)

// childRole tells this test binary, re-executed, what to be (TestMain).
const childRole = "SPRITEFWD_AGENT_TEST_ROLE"

// startProc starts cmd; the channel closes when it has exited.
func startProc(t *testing.T, cmd *exec.Cmd) <-chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return done
}

func asRole(role string, cmd *exec.Cmd) *exec.Cmd {
	cmd.Env = append(os.Environ(), childRole+"="+role)
	return cmd
}

func needProc(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("identifies processes through /proc")
	}
}

// A pid file whose pid now belongs to another process, in either format,
// must not get that process signalled: not even when its command line says
// "agent" or it runs the agent's own executable.
func TestReplaceLeavesStrangersAlone(t *testing.T) {
	needProc(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	agentArgv := append([]string{"/tmp/spritefwd/spritefwd-agent", Command},
		Args{Listen: "127.0.0.1:7022", SecretFile: "secret", Replace: true, LogFile: "agent.log"}.Argv()...)
	strangers := map[string]func() *exec.Cmd{
		"sleep": func() *exec.Cmd { return exec.Command(sleep, "60") },
		// Its command line contains "agent", all the old check asked for.
		"ssh-agent": func() *exec.Cmd { return &exec.Cmd{Path: sleep, Args: []string{"ssh-agent", "60"}} },
		// The agent's executable, with the agent's flags, but another
		// process than the one the pid file was written for.
		"same executable": func() *exec.Cmd { return asRole("idle", exec.Command(self, agentArgv[1:]...)) },
	}
	// What the pid file's record says (nil: no record) of the pid that is
	// now the stranger's.
	pidFiles := map[string]func(cur process) *process{
		"no record": func(cur process) *process { return nil },
		"record of another pid": func(cur process) *process {
			return &process{PID: cur.PID + 1, Start: cur.Start, Exe: cur.Exe, Argv: cur.Argv, Dir: cur.Dir}
		},
		"record of an agent that exited": func(cur process) *process {
			return &process{PID: cur.PID, Start: cur.Start - 1, Exe: agentArgv[0], Argv: agentArgv, Dir: "/tmp/spritefwd"}
		},
		// A VM that boots the same way each time may give another process
		// the same pid at the same tick.
		"record with the same start tick": func(cur process) *process {
			return &process{PID: cur.PID, Start: cur.Start, Exe: agentArgv[0] + " (deleted)", Argv: agentArgv, Dir: cur.Dir}
		},
		"record with another command line": func(cur process) *process {
			rec := cur
			rec.Argv = agentArgv
			return &rec
		},
	}
	for sname, stranger := range strangers {
		for fname, record := range pidFiles {
			t.Run(sname+"/"+fname, func(t *testing.T) {
				cmd := stranger()
				done := startProc(t, cmd)
				cur := waitExec(t, cmd.Process.Pid)
				pidfile := filepath.Join(t.TempDir(), "agent.pid")
				rec := record(cur)
				writeRecord(t, pidfile, cur.PID, rec)
				if err := Replace(context.Background(), pidfile, 200*time.Millisecond, zerolog.Nop()); err != nil {
					t.Fatal(err)
				}
				select {
				case <-done:
					t.Fatalf("Replace signalled pid %d (%q), which is not our agent; the pid file's record: %+v", cur.PID, cur.Argv, rec)
				case <-time.After(300 * time.Millisecond):
				}
			})
		}
	}
}

// waitExec returns pid's /proc entry once it is complete: Start returns
// while the kernel is still finishing the exec, and the command line shows
// up last.
func waitExec(t *testing.T, pid int) process {
	t.Helper()
	var cur process
	testsvc.Eventually(t, "the process to show its executable and command line", func() bool {
		var err error
		cur, err = lookup(pid)
		return err == nil
	})
	return cur
}

// writeRecord writes a pid file for pid, and rec beside it unless nil.
func writeRecord(t *testing.T, pidfile string, pid int, rec *process) {
	t.Helper()
	os.Remove(recordFile(pidfile))
	if rec != nil {
		b, _ := json.Marshal(rec)
		if err := os.WriteFile(recordFile(pidfile), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(pidfile, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startAgent runs this test binary as an agent with argv in dir and
// returns once it is ready.
func startAgent(t *testing.T, dir string, argv []string) (*exec.Cmd, Ready, <-chan struct{}) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := asRole("agent", exec.Command(self, argv...))
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	done := startProc(t, cmd)
	line, _ := bufio.NewReader(stdout).ReadBytes('\n')
	r, ok := ParseReady(line)
	if !ok {
		log, _ := os.ReadFile(filepath.Join(dir, "agent.log"))
		t.Fatalf("the agent printed %q, not a ready line; its log:\n%s", line, log)
	}
	return cmd, r, done
}

// A redeploy starts the new agent with the same command line in the same
// directory: it must stop the old one and take its port, whether the old
// one wrote a record or, from before records, a bare pid.
func TestReplaceStopsOurAgent(t *testing.T) {
	needProc(t)
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(mux.NewSecret()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			argv := append([]string{Command}, Args{Listen: addr, SecretFile: "secret", Replace: true, LogFile: "agent.log"}.Argv()...)
			old, _, oldDone := startAgent(t, dir, argv)
			pidfile := filepath.Join(dir, "agent.pid")
			if rec, wasLegacy, err := readPIDFile(pidfile); err != nil || wasLegacy || rec.PID != old.Process.Pid || rec.Start == 0 {
				t.Fatalf("the agent's pid file: %+v legacy=%v %v", rec, wasLegacy, err)
			}
			if legacy { // as agents before records left it
				os.Remove(recordFile(pidfile))
			}
			cur, r, curDone := startAgent(t, dir, argv)
			select {
			case <-oldDone:
			case <-time.After(10 * time.Second):
				t.Fatal("the old agent still runs")
			}
			if r.Listen != addr || r.PID != cur.Process.Pid {
				t.Errorf("the new agent is ready as %+v, want it on %s", r, addr)
			}
			if rec, _, err := readPIDFile(pidfile); err != nil || rec.PID != cur.Process.Pid {
				t.Errorf("the pid file names %+v (%v), want the new agent %d", rec, err, cur.Process.Pid)
			}
			select {
			case <-curDone:
				t.Fatal("the new agent exited")
			default:
			}
		})
	}
}

// An agent that ignores SIGTERM gets SIGKILL once wait is over.
func TestReplaceKillsAStubbornAgent(t *testing.T) {
	needProc(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := asRole("stubborn", exec.Command(self, "agent"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	done := startProc(t, cmd)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		t.Fatalf("the stubborn agent said %q: %v", line, err)
	}
	rec := waitExec(t, cmd.Process.Pid)
	pidfile := filepath.Join(t.TempDir(), "agent.pid")
	writeRecord(t, pidfile, rec.PID, &rec)
	start := time.Now()
	if err := Replace(context.Background(), pidfile, 300*time.Millisecond, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("still running after Replace")
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("it died after %v, before the wait was over: SIGTERM was not ignored", took)
	}
}

func TestOwned(t *testing.T) {
	argv := []string{"/s/spritefwd-agent", "agent", "--listen", "127.0.0.1:7022", "--secret-file", "secret", "--replace"}
	me := process{PID: 200, Start: 900, Exe: "/s/spritefwd-agent", Argv: argv, Dir: "/s", state: "R"}
	old := process{PID: 100, Start: 500, Exe: "/s/spritefwd-agent", Argv: argv, Dir: "/s", state: "S"}
	with := func(f func(*process)) process { p := old; f(&p); return p }
	for _, tt := range []struct {
		name     string
		rec      process
		legacy   bool
		cur      process
		expected bool
	}{
		{"the recorded agent", old, false, old, true},
		// A redeploy uploads a new executable over the running one's.
		{"its executable replaced", old, false, with(func(p *process) { p.Exe += " (deleted)" }), true},
		{"another start time", old, false, with(func(p *process) { p.Start++ }), false},
		{"another executable", old, false, with(func(p *process) { p.Exe = "/usr/bin/ssh-agent" }), false},
		{"another command line", old, false, with(func(p *process) { p.Argv = []string{"gpg-agent", "--daemon"} }), false},
		{"another directory", old, false, with(func(p *process) { p.Dir = "/elsewhere" }), false},
		{"a record without a start time", with(func(p *process) { p.Start = 0 }), false, with(func(p *process) { p.Start = 0 }), false},
		{"a zombie", old, false, with(func(p *process) { p.state = "Z" }), false},
		{"legacy: our executable, command line and directory", process{PID: 100}, true, old, true},
		{"legacy: our executable, replaced", process{PID: 100}, true, with(func(p *process) { p.Exe += " (deleted)" }), true},
		{"legacy: another command line", process{PID: 100}, true, with(func(p *process) { p.Argv = argv[:3] }), false},
		{"legacy: another executable", process{PID: 100}, true, with(func(p *process) { p.Exe = "/usr/bin/ssh-agent" }), false},
		{"legacy: another directory", process{PID: 100}, true, with(func(p *process) { p.Dir = "/" }), false},
	} {
		if got := owned(tt.rec, tt.legacy, tt.cur, me); got != tt.expected {
			t.Errorf("%s: owned = %v, want %v", tt.name, got, tt.expected)
		}
	}
}
