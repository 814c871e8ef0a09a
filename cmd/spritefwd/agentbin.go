package main

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// agentBinary finds the linux agent for arch when the config names none.
// The daemon logs which file it uploads, and warns when it is not the
// agent-only build.
func agentBinary(arch string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	return findAgent(self, arch, runtime.GOOS, runtime.GOARCH)
}

// findAgent looks, in order of preference, for
//   - spritefwd-agent-linux-ARCH next to self (make build puts both in bin/);
//   - spritefwd-agent next to self, when it is a linux/ARCH build (go
//     install ./cmd/... on a linux machine);
//   - self, the whole daemon, when it is a linux/ARCH build (goos/goarch):
//     it has the agent as a subcommand, at several times the size.
func findAgent(self, arch, goos, goarch string) (string, error) {
	dir := filepath.Dir(self)
	named := filepath.Join(dir, "spritefwd-agent-linux-"+arch)
	if _, err := os.Stat(named); err == nil {
		return named, nil
	}
	plain := filepath.Join(dir, "spritefwd-agent")
	if isBuildFor(plain, "linux", arch) {
		return plain, nil
	}
	// A test binary runs tests, not the agent.
	if goos == "linux" && goarch == arch && !strings.HasSuffix(self, ".test") {
		return self, nil
	}
	return "", fmt.Errorf("no linux/%s agent: set agent_binary, or put spritefwd-agent-linux-%s next to %s (make build makes it)", arch, arch, self)
}

// isBuildFor reports whether file is a Go program built for goos/goarch,
// as its build information says.
func isBuildFor(file, goos, goarch string) bool {
	bi, err := buildinfo.ReadFile(file)
	if err != nil {
		return false
	}
	var gotOS, gotArch string
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOOS":
			gotOS = s.Value
		case "GOARCH":
			gotArch = s.Value
		}
	}
	return gotOS == goos && gotArch == goarch
}
