//go:build unix

package spritestest

import (
	"os"
	"os/exec"
	"syscall"
)

func setProcessGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

func killProcessGroup(p *os.Process) { syscall.Kill(-p.Pid, syscall.SIGKILL) }
