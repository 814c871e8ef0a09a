//go:build linux

package spritestest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/procnet"
	"github.com/spritefwd/spritefwd/sprites"
)

// readTables runs what a daemon runs in direct mode: cat of the sprite's
// own tables.
func readTables(t *testing.T, ctx context.Context, c *sprites.Client) []int {
	t.Helper()
	out, code, err := c.Output(ctx, "box", []string{"sh", "-c", `cat "${SPRITEFWD_PROC_NET:-/proc/net}/tcp" "${SPRITEFWD_PROC_NET:-/proc/net}/tcp6"`}, 1<<20)
	if err != nil || code != 0 {
		t.Fatalf("cat tables: code %d, %v", code, err)
	}
	ls, bad := procnet.Parse(out)
	if bad != 0 {
		t.Fatalf("tables have %d bad lines:\n%s", bad, out)
	}
	var ports []int
	for _, l := range procnet.Ports(ls) {
		ports = append(ports, l.Port)
	}
	return ports
}

// A sprite's tables list what Map routes and what its commands listen on,
// and nothing else of this machine's.
func TestSpriteTables(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	s := newExecServer(t)
	c, err := sprites.New(sprites.Options{APIURL: s.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	outside, err := net.Listen("tcp", "127.0.0.1:0") // this machine's, not the sprite's
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	outsidePort := outside.Addr().(*net.TCPAddr).Port
	s.Map("box", 5432, "127.0.0.1:1")
	if got := readTables(t, ctx, c); !slices.Equal(got, []int{5432}) {
		t.Fatalf("tables list %v, want [5432]", got)
	}
	port := testsvc.FreePort(t)
	srv, err := c.Exec(ctx, "box", sprites.ExecOptions{Cmd: []string{"python3", "-m", "http.server", "--bind", "127.0.0.1", fmt.Sprint(port)}, KeepRunning: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	testsvc.Eventually(t, "the command's port in the sprite's tables", func() bool {
		return slices.Equal(s.Listening("box"), []int{5432, port})
	})
	got := readTables(t, ctx, c)
	if !slices.Contains(got, port) || slices.Contains(got, outsidePort) {
		t.Fatalf("tables list %v, want %d and not this machine's %d", got, port, outsidePort)
	}
	s.Unmap("box", 5432)
	if got := s.Listening("box"); slices.Contains(got, 5432) {
		t.Fatalf("after Unmap, listening %v", got)
	}
}

// A status call wakes a sleeping sprite, as any call about it does; the
// list wakes none. Both are counted.
func TestStatusWakes(t *testing.T) {
	s := newExecServer(t)
	if err := s.Sleep("box"); err != nil {
		t.Fatal(err)
	}
	before, _ := s.SpriteStats("box")
	if code, _, _ := call(t, s, "GET", "/v1/sprites", nil); code != 200 {
		t.Fatalf("list: %d", code)
	}
	st, _ := s.SpriteStats("box")
	if st.Wakes != before.Wakes || st.APICalls != before.APICalls || st.State != "cold" {
		t.Fatalf("after the list: %+v, want no wake and no call counted", st)
	}
	if code, _, _ := call(t, s, "GET", "/v1/sprites/box", nil); code != 200 {
		t.Fatalf("status: %d", code)
	}
	st, _ = s.SpriteStats("box")
	if st.Wakes != before.Wakes+1 || st.APICalls != before.APICalls+1 {
		t.Fatalf("after a status call: %+v, want one wake and one call more than %+v", st, before)
	}
}
