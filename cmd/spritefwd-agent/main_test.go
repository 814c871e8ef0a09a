package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

// A build says what it is: the version and commit a release build links
// in, or the revision the Go toolchain stamps when it builds in a
// checkout. (go install of a module version is proven by make
// goinstall-test: it needs a module proxy.) The daemon shares the code,
// internal/version.
func TestVersionSaysWhichBuild(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "spritefwd-agent")
	build := func(args ...string) string {
		t.Helper()
		if out, err := exec.Command("go", append(append([]string{"build", "-o", bin}, args...), ".")...).CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", args, err, out)
		}
		out, err := exec.Command(bin, "version").Output()
		if err != nil {
			t.Fatalf("%s version: %v", bin, err)
		}
		return strings.TrimSpace(string(out))
	}
	goVersion := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	got := build("-ldflags", "-X main.version=v9.8.7 -X main.commit=0123456789ab+dirty")
	if want := "spritefwd-agent v9.8.7 (commit 0123456789ab, dirty) " + goVersion; got != want {
		t.Errorf("release build says %q, want %q", got, want)
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git checkout (%v): the VCS stamp cannot be checked", err)
	}
	top, _ := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git")); err != nil || !fi.IsDir() {
		t.Skip("a git worktree: Go stamps the VCS revision only where .git is a directory")
	}
	// -buildvcs=true: GOFLAGS may turn stamping off, as it is on machines
	// that build without git.
	// The version is then a pseudo-version the toolchain derives from the
	// commit, +dirty if the tree has changes.
	got = build("-buildvcs=true")
	if want := " (commit " + strings.TrimSpace(string(head)); !strings.Contains(got, want) || !strings.HasSuffix(got, goVersion) {
		t.Errorf("a build in the checkout says %q, want …%s…%s", got, want, goVersion)
	}
}
