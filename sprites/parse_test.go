package sprites

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseInitResponse(t *testing.T) {
	for _, tt := range []struct {
		in     string
		target string
		ok     bool
	}{
		{`{"status":"connected","target":"10.0.0.1:5432"}`, "10.0.0.1:5432", true},
		{`{"status":"connected"}`, "", true},
		{`{"status":"error","target":"x"}`, "", false},
		{`<html><body>502 Bad Gateway</body></html>`, "", false},
		{``, "", false},
		{`null`, "", false},
		{`{"status":1}`, "", false},
	} {
		r, err := ParseInitResponse([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("ParseInitResponse(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if err != nil && !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseInitResponse(%q) error %v is not ErrProtocol", tt.in, err)
		}
		if tt.ok && r.Target != tt.target {
			t.Errorf("target %q, want %q", r.Target, tt.target)
		}
	}
}

func TestErrorBody(t *testing.T) {
	for in, want := range map[string]string{
		`{"error":"unauthorized","message":"invalid or missing token"}`: "unauthorized: invalid or missing token",
		`{"message":"sprite not found"}`:                                "sprite not found",
		"Process not ready after 30s\n":                                 "Process not ready after 30s",
		"":                                                              "",
	} {
		if got := ErrorBody([]byte(in)); got != want {
			t.Errorf("ErrorBody(%q) = %q, want %q", in, got, want)
		}
	}
	if got := ErrorBody([]byte(strings.Repeat("a", 5000))); len(got) > 210 {
		t.Errorf("ErrorBody did not bound a long body: %d bytes", len(got))
	}
}

func FuzzParseInitResponse(f *testing.F) {
	for _, s := range []string{
		`{"status":"connected","target":"10.0.0.1:5432"}`, `{"status":"connected","target":"[fdf::1]:22"}`,
		`{"status":"error"}`, `<html>`, `{}`, `[]`, `"connected"`, "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseInitResponse(b)
		if err == nil && r.Status != "connected" {
			t.Fatalf("accepted status %q", r.Status)
		}
		// clip keeps 200 bytes; %q may escape each into at most 4 bytes.
		if err != nil && (!utf8.ValidString(err.Error()) || len(err.Error()) > 1000) {
			t.Fatalf("error message not bounded or not UTF-8: %q", err.Error())
		}
	})
}

func FuzzErrorBody(f *testing.F) {
	for _, s := range []string{
		`{"error":"unauthorized","message":"invalid or missing token"}`, "Process not ready after 30s",
		`{"error":"sprite_creation_rate_limited"}`, "<html><h1>502</h1></html>", `{"message":`, "\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := ErrorBody(b)
		if !utf8.ValidString(got) || len(got) > 210 {
			t.Fatalf("ErrorBody(%q) = %q: not bounded or not UTF-8", b, got)
		}
	})
}
