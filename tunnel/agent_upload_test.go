package tunnel

import (
	"maps"
	"strings"
	"testing"
)

func TestParseLook(t *testing.T) {
	const sum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tt := range []struct {
		out  string
		want look
	}{
		{"arch x86_64\ngzip\nhave spritefwd-agent-0123456789abcdef " + sum + "\nsecret s3cr3t\nrunning\n",
			look{arch: "x86_64", gzip: true, secret: "s3cr3t", running: true, have: map[string]string{"spritefwd-agent-0123456789abcdef": sum}}},
		{"arch aarch64\n", look{arch: "aarch64", have: map[string]string{}}},
		{"", look{have: map[string]string{}}},
		// A hash cut short, or a file that is not an agent, is not had.
		{"have spritefwd-agent-0123456789abcdef " + sum[:40] + "\nhave other " + sum + "\n", look{have: map[string]string{}}},
		{"have spritefwd-agent-0123456789abcdef\n", look{have: map[string]string{}}},
		// What is not one of its lines is ignored, not misread.
		{"gzip-1.12\nrunning now\nsh: 1: uname: not found\narch \n", look{have: map[string]string{}}},
	} {
		got := parseLook([]byte(tt.out))
		if got.arch != tt.want.arch || got.gzip != tt.want.gzip || got.secret != tt.want.secret || got.running != tt.want.running || !maps.Equal(got.have, tt.want.have) {
			t.Errorf("parseLook(%q) = %+v, want %+v", tt.out, *got, tt.want)
		}
	}
}

func TestMachine(t *testing.T) {
	for m, want := range map[string]string{"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "riscv64": "", "": ""} {
		got, err := machine(m)
		if got != want || (err == nil) != (want != "") || err != nil && !strings.Contains(err.Error(), "unsupported machine") {
			t.Errorf("machine(%q) = %q, %v; want %q", m, got, err, want)
		}
	}
}
