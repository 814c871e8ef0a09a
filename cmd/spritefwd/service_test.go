package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A system service runs as root; installing one over a config or token
// file that another user could change fails at install, not at start.
// (checkServiceFiles rather than dispatch: a passing check would install
// a real service on this machine.)
func TestServiceInstallChecksFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to have files owned by root")
	}
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("tok\n"), 0o600)
	path := filepath.Join(dir, "spritefwd.yaml")
	os.WriteFile(path, []byte("token_file: "+tok+"\n"), 0o644)
	if err := checkServiceFiles(path); err != nil {
		t.Fatalf("root's files: %v", err)
	}
	os.Chmod(tok, 0o666)
	if err := checkServiceFiles(path); err == nil || !strings.Contains(err.Error(), "token_file "+tok) {
		t.Errorf("world-writable token file: %v, want it refused", err)
	}
	os.Chmod(tok, 0o600)
	os.Chmod(path, 0o664)
	if err := checkServiceFiles(path); err == nil || !strings.Contains(err.Error(), "chmod go-w "+path) {
		t.Errorf("group-writable config: %v, want it refused with the fix", err)
	}
}
