package config

import (
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/spritefwd/spritefwd/agent"
	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/sprites"
)

// isValue reports whether a setting's def is a value rather than, in
// parentheses, what happens without the key.
func isValue(def string) bool { return !strings.HasPrefix(def, "(") }

// apply runs set's parser on text, written as in the file, into s.
func apply[S any](p *parser, s S, set setting[S], text string) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(set.name+": "+text), &doc); err != nil {
		p.errf(Pos{1, 1}, "%s: %v", set.name, err)
		return
	}
	set.parse(p, s, set.name, doc.Content[0].Content[1])
}

// TestSettingsDefaults checks each setting's def against what Default and
// defaultForward set: applying every def to an empty config must give the
// defaults, and nothing else.
func TestSettingsDefaults(t *testing.T) {
	p := &parser{file: "def"}
	top := &topState{cfg: &Config{}}
	for _, set := range topSettings {
		if isValue(set.def) {
			apply(p, top, set, set.def)
		}
	}
	fwd := &fwdState{f: &Forward{}}
	for _, set := range forwardSettings {
		if isValue(set.def) {
			apply(p, fwd, set, set.def)
		}
	}
	if len(p.errs) > 0 {
		t.Fatalf("a def does not parse:\n%v", p.errs)
	}
	if want := Default(); !reflect.DeepEqual(top.cfg, want) {
		t.Errorf("top-level defs give\n%+v\nDefault() is\n%+v", top.cfg, want)
	}
	if want := defaultForward(); *fwd.f != want {
		t.Errorf("forward defs give\n%+v\ndefaultForward() is\n%+v", *fwd.f, want)
	}
}

// TestREADMESettings checks README.md's settings table against the
// settings: the same keys, and the same defaults.
func TestREADMESettings(t *testing.T) {
	rows := readmeSettings(t)
	checkREADME(t, rows, "", topSettings, func() (*topState, func() any) {
		s := &topState{cfg: &Config{}}
		return s, func() any { return *s.cfg }
	})
	checkREADME(t, rows, "forward ", forwardSettings, func() (*fwdState, func() any) {
		s := &fwdState{f: &Forward{}}
		return s, func() any { return *s.f }
	})
	checkREADME(t, rows, "sprite ", spriteSettings, func() (*fwdState, func() any) {
		s := &fwdState{f: &Forward{}}
		return s, func() any {
			return struct {
				f    Forward
				auto AutoForward
			}{*s.f, s.auto}
		}
	})
	for key := range rows {
		t.Errorf("README.md's settings table has %s, which config does not parse", key)
	}
}

// checkREADME checks settings against README.md's rows, and deletes the
// rows it finds. A value default is compared by what it parses to, with a
// fresh state from empty, so that 60s in the README matches 1m0s.
func checkREADME[S any](t *testing.T, rows map[string]string, prefix string, settings []setting[S], empty func() (S, func() any)) {
	t.Helper()
	parsed := func(set setting[S], text string) (any, error) {
		p := &parser{file: "README.md"}
		s, result := empty()
		apply(p, s, set, text)
		if len(p.errs) > 0 {
			return nil, p.errs
		}
		return result(), nil
	}
	for _, set := range settings {
		key := prefix + "`" + set.name + "`"
		got, ok := rows[key]
		if !ok {
			t.Errorf("README.md's settings table has no row for %s; add\n| %s | %s | %s |", key, key, readmeDefault(set.def), set.doc)
			continue
		}
		delete(rows, key)
		text, ok := strings.CutPrefix(got, "`")
		text, ok2 := strings.CutSuffix(text, "`")
		if !isValue(set.def) || !ok || !ok2 {
			if got != readmeDefault(set.def) {
				t.Errorf("README.md: %s default is %s; config says %s", key, got, readmeDefault(set.def))
			}
			continue
		}
		want, err := parsed(set, set.def)
		if err != nil {
			t.Fatalf("%s def %q: %v", set.name, set.def, err)
		}
		if readme, err := parsed(set, text); err != nil || !reflect.DeepEqual(readme, want) {
			t.Errorf("README.md: %s default is %s; config says %s", key, got, readmeDefault(set.def))
		}
	}
}

func readmeDefault(def string) string {
	if isValue(def) {
		return "`" + def + "`"
	}
	return def
}

// readmeSettings reads the table under README.md's "## Configuration":
// key cell to default cell.
func readmeSettings(t *testing.T) map[string]string {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no ## Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string]string{}
	header := false
	for line := range strings.SplitSeq(section, "\n") {
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		switch {
		case line == "| key | default | meaning |":
			header = true
		case !header || !strings.HasPrefix(line, "| ") || len(cells) < 3:
		default:
			if _, dup := rows[cells[0]]; dup {
				t.Errorf("README.md: %s has two rows", cells[0])
			}
			rows[cells[0]] = cells[1]
		}
	}
	if len(rows) == 0 {
		t.Fatal("README.md's ## Configuration has no | key | default | meaning | table")
	}
	return rows
}

// sprites, mux and agent keep their own defaults, as they must not import
// config; the daemon passes config's values to them, but a library user or
// the agent's own command line gets theirs.
func TestDefaultsAgreeWithPackages(t *testing.T) {
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"sprites.DefaultAPIURL", sprites.DefaultAPIURL, DefaultAPIURL},
		{"sprites.DefaultMaxMessage", sprites.DefaultMaxMessage, DefaultMaxMessage},
		// The daemon passes wake_timeout as the handshake timeout.
		{"sprites.DefaultHandshakeTimeout", sprites.DefaultHandshakeTimeout, DefaultWakeTimeout},
		{"mux.DefaultBuffer", mux.DefaultBuffer, DefaultResumeBuffer},
		{"mux.DefaultBudget", mux.DefaultBudget, DefaultMuxMemory},
		{"agent.DefaultListen", agent.DefaultListen, net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultAgentPort))},
	} {
		if tt.got != tt.want {
			t.Errorf("%s is %v; config's default is %v", tt.name, tt.got, tt.want)
		}
	}
}
