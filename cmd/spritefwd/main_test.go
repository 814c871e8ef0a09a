package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidateReportsPositions(t *testing.T) {
	for file, want := range map[string][]string{
		"unknown-key.yaml":         {`unknown-key.yaml:3:5: unknown forward key "prot"; did you mean "port"?`},
		"duplicate-port.yaml":      {`duplicate-port.yaml:3:5: listen 127.0.0.1:5432 overlaps the forward at line 2`},
		"bad-port.yaml":            {`bad-port.yaml:2:5: rule "99999:db:5432": local port "99999"`},
		"public-and-duration.yaml": {`public-and-duration.yaml:1:12: keepalive "15" is not a duration`, `public-and-duration.yaml:3:5: listen "0.0.0.0:80" is reachable from other machines`},
		"duplicate-name.yaml":      {`duplicate-name.yaml:5:5: forward name "a" is already used at line 2`},
		"missing-sprite.yaml":      {`missing-sprite.yaml:2:5: forward is missing sprite:`},
	} {
		t.Run(file, func(t *testing.T) {
			path := filepath.Join("testdata", "broken", file)
			var out, errOut bytes.Buffer
			err := dispatch([]string{"validate", "--config", path}, &out, &errOut)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 1 {
				t.Fatalf("validate returned %v, want exit 1", err)
			}
			for _, w := range want {
				if !strings.Contains(ee.msg, filepath.Join("testdata", "broken", w)) {
					t.Errorf("output:\n%s\nwant a line containing %s", ee.msg, w)
				}
			}
		})
	}
}

func TestExamplesAreValid(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) < 3 {
		t.Fatalf("found %d examples", len(files))
	}
	for _, f := range files {
		var out, errOut bytes.Buffer
		if err := dispatch([]string{"validate", f}, &out, &errOut); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestHelp: every command documents its flags.
// helpOutput records a command's help text and the FlagSets behind it.
type helpOutput struct {
	bytes.Buffer
	sets []*flag.FlagSet
}

func (h *helpOutput) observe(fs *flag.FlagSet) { h.sets = append(h.sets, fs) }

// TestHelp: every command in the table is in the usage text and the
// README, answers --help, and its help documents every flag it registers,
// each with a description. The flags come from the FlagSets themselves, so
// a new flag cannot be missed.
func TestHelp(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var top bytes.Buffer
	if err := dispatch([]string{"help"}, &top, &top); err != nil {
		t.Fatal(err)
	}
	for _, c := range commands() {
		if !strings.Contains(top.String(), "  spritefwd "+c.name) {
			t.Errorf("usage lacks %s:\n%s", c.name, top.String())
		}
		if !strings.Contains(string(readme), "spritefwd "+c.name) {
			t.Errorf("README never shows spritefwd %s", c.name)
		}
		if c.name == "version" {
			continue
		}
		args := []string{c.name, "--help"}
		if c.name == "service" {
			args = []string{c.name, "install", "--help"}
		}
		var out helpOutput
		if err := dispatch(args, &out, &out); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: %v, want flag.ErrHelp", strings.Join(args, " "), err)
		}
		if len(out.sets) == 0 && c.name != "agent" { // agent's flags are package agent's, tested there
			t.Errorf("%s registers no flags through newFlags", c.name)
		}
		for _, fs := range out.sets {
			fs.VisitAll(func(f *flag.Flag) {
				if f.Usage == "" {
					t.Errorf("%s -%s has no description", c.name, f.Name)
				}
				if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f.Name) + `\b`).MatchString(out.String()) {
					t.Errorf("%s --help does not document -%s:\n%s", c.name, f.Name, out.String())
				}
			})
		}
	}
}

func TestDemoSelftest(t *testing.T) {
	// The demo deploys an agent into its sprite; this test binary is not
	// one, so build the real thing: the agent-only build, as make build does.
	agent := filepath.Join(t.TempDir(), "spritefwd-agent")
	if out, err := exec.Command("go", "build", "-o", agent, "../spritefwd-agent").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var out, errOut bytes.Buffer
	err := dispatch([]string{"demo", "--selftest", "--http-port", "0", "--echo-port", "0", "--mux-port", "0", "--agent-binary", agent,
		"--wake-delay", "300ms", "--log-level", "warn"}, &out, &errOut)
	if err != nil {
		t.Fatalf("demo selftest: %v", err)
	}
}

// With no agent_binary, the daemon finds its agent next to itself: the
// agent-only build if there is one, else itself, the whole daemon, with a
// warning. Both deploy and carry the demo's mux connection.
func TestDemoFindsItsAgent(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the emulator runs the agent here, which must be a linux build")
	}
	dir := t.TempDir()
	daemon := filepath.Join(dir, "spritefwd")
	for pkg, out := range map[string]string{".": daemon, "../spritefwd-agent": filepath.Join(dir, "spritefwd-agent")} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	for _, tt := range []struct {
		name, want string
	}{
		{"spritefwd-agent next to it", "uploading the agent-only build"},
		{"only the daemon", "uploading the whole daemon as the agent"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "only the daemon" {
				os.Remove(filepath.Join(dir, "spritefwd-agent"))
			}
			var stderr bytes.Buffer
			cmd := exec.Command(daemon, "demo", "--selftest", "--http-port", "0", "--echo-port", "0", "--mux-port", "0",
				"--wake-delay", "300ms", "--log-level", "info", "--log-format", "json")
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("demo selftest: %v\n%s", err, stderr.String())
			}
			for _, want := range []string{tt.want, `"agent deployed"`} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("the demo's log does not say %s:\n%s", want, stderr.String())
				}
			}
		})
	}
}

func TestFindAgent(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[runtime.GOARCH]
	if other == "" {
		t.Skipf("no agent for %s", runtime.GOARCH)
	}
	// files: what lies next to the daemon; "go" is a Go program built for
	// this machine (this test binary).
	for _, tt := range []struct {
		name         string
		files        map[string]string
		daemon, arch string
		goos, goarch string
		want         string // a file name, or "error"
	}{
		{"the named agent build first", map[string]string{"spritefwd-agent-linux-" + other: "", "spritefwd-agent": "go"},
			"spritefwd", other, "linux", other, "spritefwd-agent-linux-" + other},
		{"spritefwd-agent when it is a build for the sprite", map[string]string{"spritefwd-agent": "go"},
			"spritefwd", runtime.GOARCH, "linux", runtime.GOARCH, map[bool]string{true: "spritefwd-agent", false: "spritefwd"}[runtime.GOOS == "linux"]},
		{"not spritefwd-agent for another architecture", map[string]string{"spritefwd-agent": "go"},
			"spritefwd", other, "linux", runtime.GOARCH, "error"},
		{"not a spritefwd-agent that is no Go program", map[string]string{"spritefwd-agent": "#!/bin/sh"},
			"spritefwd", other, "linux", other, "spritefwd"},
		{"the daemon itself, a linux build for the sprite", nil, "spritefwd", "arm64", "linux", "arm64", "spritefwd"},
		{"not the daemon for another architecture", nil, "spritefwd", "arm64", "linux", "amd64", "error"},
		{"not a daemon for macOS", nil, "spritefwd", "arm64", "darwin", "arm64", "error"},
		{"not a test binary", nil, "spritefwd.test", "amd64", "linux", "amd64", "error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				p := filepath.Join(dir, name)
				if content == "go" {
					err = os.Symlink(self, p)
				} else {
					err = os.WriteFile(p, []byte(content), 0o755)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			got, err := findAgent(filepath.Join(dir, tt.daemon), tt.arch, tt.goos, tt.goarch)
			if tt.want == "error" {
				if err == nil || !strings.Contains(err.Error(), "spritefwd-agent-linux-"+tt.arch) {
					t.Fatalf("findAgent = %q, %v; want an error naming spritefwd-agent-linux-%s", got, err, tt.arch)
				}
				return
			}
			if err != nil || got != filepath.Join(dir, tt.want) {
				t.Fatalf("findAgent = %q, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestForwardRejectsBadSpecs(t *testing.T) {
	for _, args := range [][]string{
		{"forward", "db"},
		{"forward", "db", "99999"},
		{"forward", "--address", "0.0.0.0", "db", "5432"},
		{"forward", "--only", "3000", "db", "5432"},
		{"forward", "--auto", "--only", "3999-3000", "db"},
		{"forward", "--auto", "--exclude", "x", "db"},
		{"forward", "--auto", "--address", "0.0.0.0", "db"},
		{"forward", "--auto"},
	} {
		var out bytes.Buffer
		err := dispatch(args, &out, &out)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
	}
}
