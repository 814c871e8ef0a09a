package main

import (
	"bytes"
	"errors"
	"flag"
	"os/exec"
	"path/filepath"
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
func TestHelp(t *testing.T) {
	for cmd, flags := range map[string][]string{
		"run":      {"-config", "-socket", "-no-watch", "-allow-root", "-log-level", "-log-format", "-log-file"},
		"forward":  {"-api-url", "-token-file", "-keepalive", "-wake-timeout", "-address", "-allow-public", "-socket"},
		"status":   {"-socket", "-json", "-w"},
		"reload":   {"-socket"},
		"validate": {"-config"},
		"sim": {"-listen", "-token", "-map", "-idle-sleep", "-cold-after", "-wake-delay", "-cold-proxy", "-max-wait",
			"-target-eof", "-max-message", "-latency", "-drop-rate", "-allow-public"},
		"demo":  {"-http-port", "-echo-port", "-idle-sleep", "-wake-delay", "-selftest"},
		"agent": {"-listen", "-secret-file", "-replace", "-allow-host", "-log-level", "-log-format", "-log-file"},
	} {
		var out, errOut bytes.Buffer
		err := dispatch([]string{cmd, "--help"}, &out, &errOut)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s --help: %v", cmd, err)
		}
		for _, f := range flags {
			if !strings.Contains(errOut.String(), "  "+f+" ") && !strings.Contains(errOut.String(), "  "+f+"\n") && !strings.Contains(errOut.String(), "  "+f+"\t") {
				t.Errorf("%s --help does not document %s:\n%s", cmd, f, errOut.String())
			}
		}
	}
	var out bytes.Buffer
	if err := dispatch([]string{"help"}, &out, &out); err != nil || !strings.Contains(out.String(), "spritefwd forward SPRITE") {
		t.Errorf("help: %v\n%s", err, out.String())
	}
}

func TestDemoSelftest(t *testing.T) {
	// The demo deploys an agent into its sprite; this test binary is not
	// one, so build the real thing.
	agent := filepath.Join(t.TempDir(), "spritefwd")
	if out, err := exec.Command("go", "build", "-o", agent, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var out, errOut bytes.Buffer
	err := dispatch([]string{"demo", "--selftest", "--http-port", "0", "--echo-port", "0", "--mux-port", "0", "--agent-binary", agent,
		"--wake-delay", "300ms", "--log-level", "warn"}, &out, &errOut)
	if err != nil {
		t.Fatalf("demo selftest: %v", err)
	}
}

func TestForwardRejectsBadSpecs(t *testing.T) {
	for _, args := range [][]string{
		{"forward", "db"},
		{"forward", "db", "99999"},
		{"forward", "--address", "0.0.0.0", "db", "5432"},
	} {
		var out bytes.Buffer
		err := dispatch(args, &out, &out)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
	}
}
