//go:build unix

package spritestest

import (
	"os"
	"os/exec"
	"syscall"
)

func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dieWithParent(cmd.SysProcAttr)
}

func killProcessGroup(p *os.Process) { syscall.Kill(-p.Pid, syscall.SIGKILL) }

// freezeProcessGroup and thawProcessGroup stand in for a sprite's
// suspension: its processes stop, and go on where they were on wake.
func freezeProcessGroup(p *os.Process) { syscall.Kill(-p.Pid, syscall.SIGSTOP) }

func thawProcessGroup(p *os.Process) { syscall.Kill(-p.Pid, syscall.SIGCONT) }
