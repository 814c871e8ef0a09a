package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Every flag a command registers is offered: the completer reads the same
// FlagSets that TestHelp checks, so a new flag cannot be missing.
func TestCompletionOffersEveryRegisteredFlag(t *testing.T) {
	c := completer{commands: commands(), positionals: positionals()}
	for _, cmd := range commands() {
		if cmd.name == "version" || cmd.name == "agent" { // no flags; the agent's are package agent's, and no one types them
			continue
		}
		args := []string{cmd.name, "--help"}
		if cmd.name == "service" {
			args = []string{cmd.name, "install", "--help"}
		}
		var out helpOutput
		if err := dispatch(args, &out, &out); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%v: %v", args, err)
		}
		_, offered := c.complete([]string{cmd.name, "-"})
		n := 0
		for _, fs := range out.sets {
			fs.VisitAll(func(f *flag.Flag) {
				n++
				if !slices.Contains(offered, "--"+f.Name) && !slices.Contains(offered, "-"+f.Name) {
					t.Errorf("spritefwd %s - offers %v, not -%s", cmd.name, offered, f.Name)
				}
			})
		}
		if n == 0 {
			t.Errorf("%s registers no flags", cmd.name)
		}
	}
}

// A command added to the table, and a flag added to a command, are
// offered without touching the completion code.
func TestCompletionFollowsTheTable(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("forwards:\n  - {name: db, listen: 5432, sprite: pg, port: 5432}\n  - {name: web, listen: 8080, sprite: box, port: 3000}\n  - 2222:box:22\n"), 0o600)
	newcmd := command{name: "tunnel", usage: "tunnel FORWARD", run: func(args []string, _, stderr io.Writer) error {
		fs := newFlags("tunnel", "tunnel FORWARD", stderr)
		fs.String("config", "", "config file")
		fs.Bool("brand-new", false, "a flag no completion code knows")
		return fs.Parse(args)
	}}
	c := completer{commands: append(commands(), newcmd), positionals: map[string][]argKind{
		"tunnel": {argForward, argSprite}, "service": {argAction}, "validate": {argFile},
	}}
	for _, tt := range []struct {
		words []string
		files bool
		want  []string
	}{
		{[]string{""}, false, append(names(commands()), "tunnel")},
		{[]string{"tu"}, false, []string{"tunnel"}},
		{[]string{"tunnel", "--b"}, false, []string{"--brand-new"}},
		{[]string{"tunnel", "--config", cfg, ""}, false, []string{"box:22", "db", "web"}}, // a compact rule is named for its target
		{[]string{"tunnel", "--config=" + cfg, "--brand-new", "w"}, false, []string{"web"}},
		{[]string{"tunnel", "--config", "=", cfg, "d"}, false, []string{"db"}}, // bash splits at =
		{[]string{"tunnel", "--config", cfg, "db", ""}, false, []string{"box", "pg"}},
		{[]string{"tunnel", "--config", cfg, "db", "pg", ""}, false, nil},
		{[]string{"tunnel", "--config", ""}, true, nil},
		{[]string{"tunnel", "--config", "=", ""}, true, nil},
		{[]string{"tunnel", "--config=/e"}, true, nil},
		{[]string{"tunnel", "--config", filepath.Join(t.TempDir(), "missing.yaml"), ""}, false, nil},
		{[]string{"service", "st"}, false, []string{"start", "status", "stop"}},
		{[]string{"service", "install", "--u"}, false, []string{"--user"}},
		{[]string{"service", "install", ""}, false, nil},
		{[]string{"validate", ""}, true, nil},
		{[]string{"validate", "--config", "x", "--", ""}, true, nil},
		{[]string{"status", "-"}, false, []string{"--json", "--socket", "-w"}},
		{[]string{"nosuch", ""}, false, nil},
	} {
		files, got := c.complete(tt.words)
		if files != tt.files || !slices.Equal(sorted(got), sorted(tt.want)) {
			t.Errorf("complete(%q) = %v, %q; want %v, %q", tt.words, files, got, tt.files, tt.want)
		}
	}
}

func TestCompletionCommand(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		var out, errOut strings.Builder
		if err := dispatch([]string{"completion", shell}, &out, &errOut); err != nil || !strings.Contains(out.String(), "completion --words --") {
			t.Errorf("completion %s: %v\n%s", shell, err, out.String())
		}
	}
	var out, errOut strings.Builder
	if err := dispatch([]string{"completion", "tcsh"}, &out, &errOut); err == nil {
		t.Error("completion tcsh: no error")
	}
	out.Reset()
	if err := dispatch([]string{"completion", "--words", "--", "vers"}, &out, &errOut); err != nil || out.String() != "words\nversion\n" {
		t.Errorf("completion --words -- vers: %v, %q", err, out.String())
	}
}

func names(cmds []command) []string {
	var out []string
	for _, c := range cmds {
		out = append(out, c.name)
	}
	return out
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
