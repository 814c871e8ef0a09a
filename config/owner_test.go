package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A root daemon must read config and token only from files that only root
// can change: anyone else could make it upload any file to any server.
func TestCheckRootFiles(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() != 0 {
		t.Skip("needs root, to make files owned by root and by another user")
	}
	noEnv := func(string) string { return "" }
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, dir, file string) // dir holds file
		env   string                               // $SPRITES_TOKEN
		want  string                               // in the error; "" for none
	}{
		{name: "root's, 0644", setup: func(*testing.T, string, string) {}},
		{name: "another user's", want: "belongs to uid 65534, and spritefwd runs as root", setup: func(t *testing.T, _, f string) { chown(t, f) }},
		{name: "group-writable", want: "is writable by group or others (mode 0664)", setup: func(t *testing.T, _, f string) { os.Chmod(f, 0o664) }},
		{name: "in another user's directory", want: "its directory", setup: func(t *testing.T, d, _ string) { chown(t, d) }},
		{name: "in a world-writable directory", want: "its directory", setup: func(t *testing.T, d, _ string) { os.Chmod(d, 0o777) }},
		{name: "in a sticky directory", setup: func(t *testing.T, d, _ string) { os.Chmod(d, 0o777|os.ModeSticky) }},
		{name: "a root symlink to another user's file", want: "belongs to uid 65534", setup: func(t *testing.T, d, f string) {
			other := filepath.Join(d, "other.yaml")
			os.WriteFile(other, nil, 0o644)
			chown(t, other)
			os.Remove(f)
			os.Symlink(other, f)
		}},
		{name: "missing: the load says so", setup: func(t *testing.T, _, f string) { os.Remove(f) }},
	} {
		for _, which := range []string{"config", "token_file"} {
			t.Run(tt.name+"/"+which, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "etc")
				os.Mkdir(dir, 0o755)
				file := filepath.Join(dir, "f")
				os.WriteFile(file, []byte("x"), 0o644)
				os.Chmod(file, 0o644)
				tt.setup(t, dir, file)
				var err error
				if which == "config" {
					err = CheckRootFiles(file, "/nonexistent/token", noEnv)
				} else {
					err = CheckRootFiles("", file, noEnv)
				}
				switch {
				case tt.want == "" && err != nil:
					t.Errorf("refused: %v", err)
				case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), which+" ")):
					t.Errorf("err = %v, want %s ... %q", err, which, tt.want)
				case tt.want != "" && !strings.Contains(err.Error(), "service install --user"):
					t.Errorf("err = %v, does not say the way out", err)
				}
			})
		}
	}
	// With $SPRITES_TOKEN set the token file is not read, so not checked.
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("x"), 0o666)
	os.Chmod(tok, 0o666)
	if err := CheckRootFiles("", tok, func(string) string { return "from-env" }); err != nil {
		t.Errorf("token from the environment: %v", err)
	}
	if err := CheckRootFiles("", tok, noEnv); err == nil {
		t.Error("a world-writable token file passed")
	}
}

func chown(t *testing.T, path string) {
	t.Helper()
	if err := os.Lchown(path, 65534, 65534); err != nil {
		t.Skipf("cannot give a file to another user: %v", err)
	}
}
