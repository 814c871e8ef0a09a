package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spritefwd/spritefwd/control"
	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/tunnel"
)

func TestPrintStatusShowsMuxAndResumptions(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	st := control.Status{Version: "test", Started: now.Add(-time.Hour), SOCKSAddr: "127.0.0.1:1080", Forwards: []control.Forward{
		{Name: "db", Listen: "127.0.0.1:5432", Target: "db:5432", Mode: "mux", State: tunnel.StateListening,
			Agent:    &control.Agent{State: "connected", Sessions: 3, Deploys: 1, LastDeploy: 420 * time.Millisecond, Streams: 2},
			Counters: control.Counters{Open: 2, Total: 9, Resumptions: 2, ResumeTimes: []time.Duration{12 * time.Millisecond, 1500 * time.Millisecond}}},
		{Name: "web", Listen: "127.0.0.1:8080", Target: "web:3000", Mode: "mux", State: tunnel.StateListening,
			Agent: &control.Agent{State: "fallback", Fallback: "no linux/arm64 agent: set agent_binary",
				Port: 7023, Moved: "something on port 7022 failed the agent's proof; the agent moved to port 7023"}},
		{Name: "ssh", Listen: "127.0.0.1:2222", Target: "box:22", Mode: "direct", State: tunnel.StateListening,
			MaxMessage: control.MaxMessage{Bytes: 1024, State: string(sprites.LimitRefused), Since: now.Add(-3 * time.Minute)},
			Counters:   control.Counters{Open: 1, Lingering: 3, Total: 4}},
		{Name: "ssh2", Listen: "127.0.0.1:2223", Target: "box:22", Mode: "direct", State: tunnel.StateListening,
			MaxMessage: control.MaxMessage{Bytes: 1024, State: string(sprites.LimitRefused), Since: now.Add(-3 * time.Minute)}},
		{Name: "socks web:3000", Listen: "socks", Target: "web:3000", Mode: "direct", State: tunnel.StateActive, Counters: control.Counters{Total: 2}},
		{Name: "stdio db:22", Listen: "stdio", Target: "db:22", Mode: "mux", State: tunnel.StateActive, Counters: control.Counters{Open: 1, Total: 1}},
		{Name: "auto:dev:3000", Listen: "127.0.0.1:3000", Target: "dev:3000", Mode: "mux", State: tunnel.StateListening,
			Discovered: &control.Discovered{Process: "node", PID: 42, Since: now}},
		{Name: "auto:dev:9229", Listen: "127.0.0.1:9230", Target: "dev:9229", Mode: "direct", State: tunnel.StateListening,
			Discovered: &control.Discovered{Since: now}},
	}, MuxWindowBytes: 19 << 20, MuxMemory: 256 << 20}
	var b bytes.Buffer
	printStatus(&b, st, now)
	out := b.String()
	for _, row := range [][2]string{{"db ", " mux "}, {"ssh ", " direct "}, {"ssh ", " 1+3 "},
		{"socks web:3000 ", " socks "}, {"stdio db:22 ", " active "},
		{"auto:dev:3000 ", " listening (auto: node) "}, {"auto:dev:9229 ", " listening (auto) "}} {
		found := false
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, row[0]) && strings.Contains(l, row[1]) {
				found = true
			}
		}
		if !found {
			t.Errorf("no row %q with mode %q:\n%s", row[0], row[1], out)
		}
	}
	for _, want := range []string{
		"MODE", " mux→direct ", ", socks 127.0.0.1:1080",
		"mux db: agent connected, 2 streams, 3 sessions, 1 deploys (last took 420ms), 2 resumptions (latest took 12ms 1.5s)",
		"mux web: agent fallback", "using direct mode: no linux/arm64 agent: set agent_binary",
		"\n  something on port 7022 failed the agent's proof; the agent moved to port 7023",
		"sprite box reads at most 1024 bytes per WebSocket message (learned 3m",
		"\nmux windows: 19.0MiB of mux_memory 256.0MiB (beyond 256KiB per stream)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "mux windows:"); n != 1 {
		t.Errorf("the mux windows are told %d times, want once for the daemon:\n%s", n, out)
	}
	if n := strings.Count(out, "reads at most"); n != 1 {
		t.Errorf("the small limit of sprite box is told %d times, want once:\n%s", n, out)
	}
}

// Text from the sprite, the API and the config reaches status verbatim; a
// terminal must be shown it, never made to act on it.
func TestPrintStatusEscapesControlCharacters(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	st := control.Status{Version: "test", Started: now.Add(-time.Hour), APIURL: "https://api.sprites.dev",
		Rejected: []string{"c.yaml:1:1: unknown top-level key \"\x1b[31mred\""},
		Warnings: []string{"token\x07 bell"},
		Forwards: []control.Forward{
			{Name: "データベース 🐘", Listen: "127.0.0.1:5432", Target: "db:5432", Mode: "mux", State: tunnel.StateListening,
				SpriteState: "run\x1b[Hning",
				Counters:    control.Counters{LastError: "refused\x1b[2J\rgotcha\x9b2J\u202ekcatta", LastErrorAt: now.Add(-time.Minute)},
				Agent:       &control.Agent{State: "fallback", Fallback: "agent said \x1b]0;pwned\x07 on stderr\n\xff"}},
			{Name: "web", Listen: "127.0.0.1:8080", Target: "web:80", Mode: "direct", State: "failed", BindError: "listen:\tin use\x1b[1A"},
		}}
	var b bytes.Buffer
	printStatus(&b, st, now)
	out := b.String()
	if i := strings.IndexFunc(out, func(r rune) bool { return r != '\n' && !unicode.IsPrint(r) }); i >= 0 {
		t.Errorf("status prints %q raw:\n%s", out[i:min(i+8, len(out))], out)
	}
	if !utf8.ValidString(out) {
		t.Errorf("status prints invalid UTF-8:\n%s", out)
	}
	for _, want := range []string{
		`refused\x1b[2J\x0dgotcha\x9b2J\u202ekcatta`, `run\x1b[Hning`, `agent said \x1b]0;pwned\x07 on stderr\x0a\xff`,
		`unknown top-level key "\x1b[31mred"`, `token\x07 bell`, "データベース 🐘", `listen:\x09in use\x1b[1A`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %s:\n%s", want, out)
		}
	}
}

// A daemon without mux forwards, whose windows hold nothing, has no line
// about them.
func TestPrintStatusNoMuxWindowsWithoutMux(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	st := control.Status{Version: "test", Started: now, MuxMemory: 256 << 20, Forwards: []control.Forward{
		{Name: "web", Listen: "127.0.0.1:8080", Target: "web:80", Mode: "direct", State: tunnel.StateListening}}}
	var b bytes.Buffer
	printStatus(&b, st, now)
	if strings.Contains(b.String(), "mux windows") {
		t.Errorf("status tells of mux windows without a mux forward:\n%s", b.String())
	}
}
