package control

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spritefwd/spritefwd/sock"
)

// echoBackend carries a connection to an echo in place of a sprite, and
// ends it as end says.
type echoBackend struct {
	fakeBackend
	end error
}

func (b *echoBackend) Carry(sprite string, port int, c net.Conn, done func(error)) error {
	if sprite == "nope" {
		c.Close()
		return errors.New("sprite nope does not exist; check the name")
	}
	go func() {
		io.Copy(c, c)
		c.(sock.Conn).CloseWrite()
		c.Close()
		done(b.end)
	}()
	return nil
}

func TestConnect(t *testing.T) {
	for _, tt := range []struct {
		name, sprite string
		end          error
		want         string // in End's error; "" for a clean end
	}{
		{"clean", "db", nil, ""},
		{"link broken after data", "db", errors.New("sprite db port 22: link broken"), "link broken"},
		{"open failed", "nope", nil, "nope does not exist"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			ln, err := Listen(path)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Serve(ctx, ln, &echoBackend{end: tt.end}) }()
			defer func() { cancel(); <-done }()
			c := NewClient(path)
			defer c.Close()
			conn, err := c.Connect(ctx, tt.sprite, 22)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write([]byte("hello"))
			conn.CloseWrite()
			got, _ := io.ReadAll(conn)
			err = conn.End(ctx)
			switch {
			case tt.sprite == "nope" && len(got) != 0:
				t.Errorf("read %q from a connection that never opened", got)
			case tt.sprite != "nope" && string(got) != "hello":
				t.Errorf("echo %q, want hello", got)
			case tt.want == "" && err != nil:
				t.Errorf("End: %v, want a clean end", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("End: %v, want it to say %q", err, tt.want)
			}
		})
	}
}

func TestConnectRefusesBadTargets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, &echoBackend{}) }()
	defer func() { cancel(); <-done }()
	c := NewClient(path)
	defer c.Close()
	if _, err := c.Connect(ctx, "-db", 22); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "sprite name") {
		t.Errorf("CONNECT to a malformed sprite name: %v, want it refused", err)
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"db:22", "db.sprite:5432", "[::1]:22", "a:0", "a:65536", ":22", "db:", "x:-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sprite, port, err := ParseTarget(s)
		if err != nil {
			return
		}
		if port < 1 || port > 65535 || !spriteName.MatchString(sprite) {
			t.Fatalf("ParseTarget(%q) = %q, %d: accepted what it should refuse", s, sprite, port)
		}
		if s2, p2, err := ParseTarget(net.JoinHostPort(sprite, strconv.Itoa(port))); err != nil || s2 != sprite || p2 != port {
			t.Fatalf("ParseTarget does not round-trip %q: %q %d %v", s, s2, p2, err)
		}
	})
}
