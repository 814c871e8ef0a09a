package tunnel_test

// End-to-end tests of mode: mux: the real spritefwd binary deployed as the
// agent into the emulated sprite, real clients and servers on both ends.

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
	"github.com/spritefwd/spritefwd/tunnel"
)

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

// agentBinary builds spritefwd once per test run: the agent the daemon
// uploads into the emulated sprite.
func agentBinary(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "spritefwd-agent-")
		if err != nil {
			agentErr = err
			return
		}
		agentPath = filepath.Join(dir, "spritefwd")
		out, err := exec.Command("go", "build", "-o", agentPath, "../cmd/spritefwd").CombinedOutput()
		if err != nil {
			agentErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentPath
}

// startMux is startE2E with the agent binary and a free agent port (the
// emulated sprite shares this machine's network).
func startMux(t *testing.T, opts spritestest.Options, settings string, rules ...string) *e2e {
	t.Helper()
	settings = fmt.Sprintf("agent_binary: %s\nagent_port: %d\n%s", agentBinary(t), testsvc.FreePort(t), settings)
	e := startE2E(t, opts, nil, settings, rules...)
	e.sim.CreateSprite("box")
	return e
}

func (e *e2e) status(t *testing.T, name string) tunnel.Status {
	t.Helper()
	for _, s := range e.d.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no forward %s", name)
	return tunnel.Status{}
}

// echoTransfer sends n random bytes through addr and checks the echo by
// sha256.
func echoTransfer(addr string, n int, seed uint64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(seed, 7))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(c)
	werr := <-errc
	if werr != nil {
		return werr
	}
	if rerr != nil {
		return rerr
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		return fmt.Errorf("echo of %d bytes came back as %d bytes with another sha256", n, len(got))
	}
	return nil
}

func TestE2EMuxEcho(t *testing.T) {
	echo := testsvc.Serve(t, func(c net.Conn) { io.Copy(c, c); c.(*net.TCPConn).CloseWrite() })
	_, port, _ := net.SplitHostPort(echo)
	e := startMux(t, spritestest.Options{}, "", "{name: echo, listen: 0, sprite: box, port: "+port+", mode: mux}")
	addr := "127.0.0.1:" + e.port(t, "echo")
	for i := range 5 {
		if err := echoTransfer(addr, 1<<20, uint64(i)); err != nil {
			t.Fatalf("transfer %d: %v\n%s", i, err, e.logs)
		}
	}
	st := e.status(t, "echo")
	if st.Agent == nil || st.Agent.Deploys != 1 || st.Agent.Sessions != 1 {
		t.Fatalf("status %+v, want one deploy and one session", st.Agent)
	}
	t.Logf("agent: %+v", *st.Agent)
}
