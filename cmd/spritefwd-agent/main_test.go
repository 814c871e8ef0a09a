package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The daemon uploads this binary on every deploy: it must not grow the
// daemon's dependencies back. The list names what would (the Sprites
// client and its WebSocket, HTTP, TLS, metrics, service management).
func TestImportsOnlyTheAgent(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, forbidden := range []string{
		"github.com/spritefwd/spritefwd/sprites", "github.com/spritefwd/spritefwd/tunnel",
		"github.com/spritefwd/spritefwd/config", "github.com/coder/websocket",
		"github.com/prometheus/client_golang/prometheus", "github.com/kardianos/service",
		"net/http", "crypto/tls",
	} {
		for _, d := range deps {
			if d == forbidden {
				t.Errorf("spritefwd-agent imports %s", d)
			}
		}
	}
	if len(deps) == 0 || !strings.HasSuffix(deps[len(deps)-1], "/cmd/spritefwd-agent") {
		t.Fatalf("go list -deps printed %d packages, ending with %v", len(deps), deps[len(deps)-1:])
	}
}
