//go:build linux

package spritestest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites"
)

// A server started through exec is announced with port_opened and can be
// reached through the proxy; sleep freezes it and a wake thaws it.
func TestExecPortsReachableThroughProxy(t *testing.T) {
	if _, err := exec.LookPath("socat"); err != nil {
		t.Skip("socat not installed (make test-deps)")
	}
	s := newExecServer(t)
	c, err := sprites.New(sprites.Options{APIURL: s.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := testsvc.FreePort(t)
	if _, err := c.Dial(ctx, "box", "localhost", port); !sprites.IsRefused(err) {
		t.Fatalf("before the server starts: %v, want refused", err)
	}
	sess, err := c.Exec(ctx, "box", sprites.ExecOptions{
		Cmd: []string{"socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr", port), "EXEC:cat"}, KeepRunning: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for pid == 0 {
		ev, err := sess.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for port_opened: %v", err)
		}
		if ev.Notice != nil && ev.Notice.Type == "port_opened" && ev.Notice.Port == port {
			pid = ev.Notice.PID
		}
	}
	sess.Close() // detached, it keeps running

	echo := func() {
		t.Helper()
		l, err := c.Dial(ctx, "box", "localhost", port)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		l.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(l, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q %v", buf, err)
		}
	}
	echo()
	if err := s.Sleep("box"); err != nil {
		t.Fatal(err)
	}
	// A signal is delivered, not applied at once.
	testsvc.Eventually(t, "the sleeping sprite's command to be stopped (state T)", func() bool { return procState(pid) == "T" })
	echo() // wakes the sprite
	if st := procState(pid); st == "T" {
		t.Error("awake, the command is still stopped")
	}
}

func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}
