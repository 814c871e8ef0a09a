package agent

import (
	"bytes"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
)

// The daemon writes the agent's command line with Argv and the agent reads
// it with ParseArgs: whatever one side says, the other must read back.
func TestArgsRoundTrip(t *testing.T) {
	for _, a := range []Args{
		{Listen: "127.0.0.1:7022", SecretFile: "secret", Replace: true, LogFile: "agent.log"},
		{Listen: "127.0.0.1:1", SecretFile: "/tmp/spritefwd/secret", LogLevel: "debug", LogFormat: "json"},
		{Listen: "[::1]:9000", SecretFile: "-", AllowHosts: []string{"db.internal", "10.0.0.7"}, LogFormat: "console"},
		{SecretFile: "a file with spaces", Replace: true, AllowHosts: []string{"x"}},
	} {
		want := a
		for _, d := range []struct {
			field *string
			def   string
		}{
			{&want.Listen, DefaultListen}, {&want.LogLevel, DefaultLogLevel}, {&want.LogFormat, DefaultLogFormat},
		} {
			if *d.field == "" {
				*d.field = d.def
			}
		}
		// As the daemon starts either binary: with the subcommand in front.
		for _, argv := range [][]string{a.Argv(), append([]string{Command}, a.Argv()...)} {
			got, err := ParseArgs(argv, &bytes.Buffer{})
			if err != nil {
				t.Errorf("ParseArgs(%q): %v", argv, err)
				continue
			}
			if got.Listen != want.Listen || got.SecretFile != want.SecretFile || got.Replace != want.Replace ||
				!slices.Equal(got.AllowHosts, want.AllowHosts) || got.LogFile != want.LogFile ||
				got.LogLevel != want.LogLevel || got.LogFormat != want.LogFormat {
				t.Errorf("ParseArgs(%q) = %+v, want %+v", argv, got, want)
			}
		}
	}
}

func TestParseArgsRefuses(t *testing.T) {
	for _, tt := range []struct {
		argv  []string
		usage bool // a UsageError, exit status 2
		want  string
	}{
		{[]string{"--listen", "127.0.0.1:1"}, true, "--secret-file is required"},
		{[]string{"--secret-file", "s", "extra"}, true, `unexpected argument "extra"`},
		{[]string{"agent", "agent", "--secret-file", "s"}, true, `unexpected argument "agent"`},
		{[]string{"--secret-file", "s", "--no-such-flag"}, false, "not defined"},
	} {
		var stderr bytes.Buffer
		_, err := ParseArgs(tt.argv, &stderr)
		var ue *UsageError
		if err == nil || errors.As(err, &ue) != tt.usage || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseArgs(%q) = %v, want an error saying %q (usage error: %v)", tt.argv, err, tt.want, tt.usage)
		}
	}
}

// spritefwd agent --help and spritefwd-agent --help print the same page.
func TestParseArgsHelp(t *testing.T) {
	var stderr bytes.Buffer
	if _, err := ParseArgs([]string{"agent", "--help"}, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"spritefwd agent --listen", "spritefwd-agent [agent]", "-listen", "-secret-file", "-replace",
		"-allow-host", "-log-file", "-log-level", "-log-format"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("--help does not mention %s:\n%s", want, stderr.String())
		}
	}
}

func TestParseReady(t *testing.T) {
	var b bytes.Buffer
	WriteReady(&b, Ready{Ready: true, Listen: "127.0.0.1:7022", Version: "v1", PID: 42})
	for _, tt := range []struct {
		line string
		ok   bool
	}{
		{b.String(), true},
		{strings.TrimSuffix(b.String(), "\n") + "\r\n", true},
		{`{"ready":false,"listen":"x"}`, false},
		{`{"ready":false,"listen":"x","port_held":true}`, false},
		{"starting up", false},
		{"", false},
	} {
		r, ok := ParseReady([]byte(tt.line))
		if ok != tt.ok || (ok && (r.Listen != "127.0.0.1:7022" || r.PID != 42 || r.Version != "v1")) {
			t.Errorf("ParseReady(%q) = %+v, %v; want ok=%v", tt.line, r, ok, tt.ok)
		}
	}
}

func TestParsePortHeld(t *testing.T) {
	var held, ready bytes.Buffer
	WriteReady(&held, Ready{Listen: "127.0.0.1:7022", PortHeld: true})
	WriteReady(&ready, Ready{Ready: true, Listen: "127.0.0.1:7022", PortHeld: true})
	for _, tt := range []struct {
		line string
		want bool
	}{
		{held.String(), true},
		{ready.String(), false}, // listening after all: ready wins
		{`{"ready":false,"listen":"x"}`, false},
		{"port_held", false},
		{"", false},
	} {
		if got := ParsePortHeld([]byte(tt.line)); got != tt.want {
			t.Errorf("ParsePortHeld(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}
