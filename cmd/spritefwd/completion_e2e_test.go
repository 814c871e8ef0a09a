package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

// Real bash sources the script spritefwd prints, registers it, and
// completes lines through it: the function runs the spritefwd on $PATH,
// as it does for a user. (make package-test drives the zsh and fish
// scripts too, as the package installs them.)
func TestE2ECompletionBash(t *testing.T) {
	testsvc.Need(t, "bash")
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "spritefwd"), ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	os.MkdirAll(filepath.Join(dir, "xdg", "spritefwd"), 0o700)
	os.WriteFile(filepath.Join(dir, "xdg", "spritefwd", "config.yaml"),
		[]byte("forwards:\n  - {name: db, listen: 5432, sprite: pg, port: 5432}\n  - {name: web, listen: 8080, sprite: box, port: 3000}\n"), 0o600)
	script := `set -e
source <(spritefwd completion bash)
complete -p spritefwd
comp() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _spritefwd; echo "$*|${COMPREPLY[*]}"; }
comp spritefwd ser
comp spritefwd service st
comp spritefwd status -
comp spritefwd forward ''
comp spritefwd forward --mux b
comp spritefwd run --config ''
`
	cmd := exec.Command("bash", "--norc", "--noprofile", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "XDG_CONFIG_HOME="+filepath.Join(dir, "xdg"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	want := `complete -F _spritefwd spritefwd
spritefwd ser|service
spritefwd service st|start stop status
spritefwd status -|--json --socket -w
spritefwd forward |box pg
spritefwd forward --mux b|box
spritefwd run --config |
`
	if string(out) != want {
		t.Errorf("bash completes:\n%s\nwant:\n%s", out, want)
	}
}
