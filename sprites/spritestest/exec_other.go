//go:build !unix

package spritestest

import (
	"os"
	"os/exec"
)

func setProcessGroup(*exec.Cmd) {}

func killProcessGroup(p *os.Process) { p.Kill() }

func freezeProcessGroup(*os.Process) {}

func thawProcessGroup(*os.Process) {}
