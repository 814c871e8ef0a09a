package spritestest

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseMap(t *testing.T) {
	for _, tt := range []struct {
		in     string
		name   string
		port   int
		target string
		ok     bool
	}{
		{"db:5432=127.0.0.1:15432", "db", 5432, "127.0.0.1:15432", true},
		{"db:5432=unix:/tmp/pg/.s.PGSQL.5432", "db", 5432, "unix:/tmp/pg/.s.PGSQL.5432", true},
		{"web:80=[::1]:8080", "web", 80, "[::1]:8080", true},
		{"db:5432", "", 0, "", false},
		{"db:0=127.0.0.1:1", "", 0, "", false},
		{"db:x=127.0.0.1:1", "", 0, "", false},
		{":5432=127.0.0.1:1", "", 0, "", false},
		{"db:5432=nohostport", "", 0, "", false},
	} {
		name, port, target, err := ParseMap(tt.in)
		if (err == nil) != tt.ok || name != tt.name || port != tt.port || target != tt.target {
			t.Errorf("ParseMap(%q) = %q %d %q %v", tt.in, name, port, target, err)
		}
	}
}

func FuzzParseMap(f *testing.F) {
	f.Add("db:5432=127.0.0.1:15432")
	f.Add("x:1=unix:/p")
	f.Fuzz(func(t *testing.T, s string) {
		_, port, _, err := ParseMap(s)
		if err == nil && (port < 1 || port > 65535) {
			t.Fatalf("accepted port %d", port)
		}
	})
}
