package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// TestCAFile: a ca_file with a certificate is taken, "~/" expanded; one
// that is missing, not a file, or holds no certificate is an error at the
// value's line and column, not a TLS failure at the first connection.
func TestCAFile(t *testing.T) {
	dir := t.TempDir()
	caPEM, _, err := spritestest.NewCertificates()
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "ca.pem")
	os.WriteFile(good, caPEM, 0o600)
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate\n"), 0o600)

	cfg, err := Parse("f.yaml", []byte("ca_file: "+good+"\n"))
	if err != nil {
		t.Fatalf("good ca_file: %v", err)
	}
	if cfg.CAFile != good {
		t.Errorf("CAFile = %q, want %q", cfg.CAFile, good)
	}
	if pool, err := LoadCA(cfg.CAFile); err != nil || pool == nil {
		t.Errorf("LoadCA: %v", err)
	}
	t.Setenv("HOME", dir)
	if cfg, err := Parse("f.yaml", []byte("ca_file: ~/ca.pem\n")); err != nil || cfg.CAFile != good {
		t.Errorf("ca_file ~/ca.pem: %v, CAFile %q, want %q", err, cfg.CAFile, good)
	}
	if cfg, _ := Parse("f.yaml", nil); cfg.CAFile != "" {
		t.Errorf("no ca_file: CAFile = %q, want empty (the system's roots)", cfg.CAFile)
	}

	for _, tt := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.pem"), "no such file"},
		{"directory", dir, "not a regular file"},
		{"no certificate", junk, "holds no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte("keepalive: 5s\nca_file: "+tt.path+"\n"))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if got := err.Error(); !strings.HasPrefix(got, "f.yaml:2:10: ca_file: ") || !strings.Contains(got, tt.want) {
				t.Errorf("error %q, want f.yaml:2:10: ca_file: …%s…", got, tt.want)
			}
		})
	}
}
