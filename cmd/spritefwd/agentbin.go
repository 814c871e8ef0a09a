package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// agentBinary finds the linux agent for arch when the config names none:
// spritefwd-linux-ARCH next to this executable (make build puts both in
// bin/), or this executable itself when it is a linux/ARCH build.
func agentBinary(arch string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	next := filepath.Join(filepath.Dir(self), "spritefwd-linux-"+arch)
	if _, err := os.Stat(next); err == nil {
		return next, nil
	}
	// A test binary runs tests, not the agent.
	if runtime.GOOS == "linux" && runtime.GOARCH == arch && !strings.HasSuffix(self, ".test") {
		return self, nil
	}
	return "", fmt.Errorf("no linux/%s agent: set agent_binary, or put spritefwd-linux-%s next to %s (make build makes both)", arch, arch, self)
}
