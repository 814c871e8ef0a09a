//go:build unix

package main

// End-to-end tests of spritefwd stdio: real ssh and scp through the block
// that spritefwd ssh-config prints, with and without a running daemon, in
// direct and mux mode, against the emulator and a real sshd.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/control"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// stdioRig is a sprite "db" whose port 22 is a real sshd, a config and a
// control socket where spritefwd looks for them by default
// ($XDG_CONFIG_HOME, $XDG_RUNTIME_DIR), and, if asked, a daemon.
type stdioRig struct {
	t      *testing.T
	sim    *spritestest.Server
	sshd   *testsvc.SSHD
	dir    string
	env    []string
	socket string
	r      *runner // nil without a daemon
	bin    string
	port   string // sshd's, on this machine and in the sprite: a mux agent dials it here
}

// stdioBinaries builds spritefwd (the ProxyCommand) and the agent once.
func stdioBinaries(t *testing.T) (bin, agent string) {
	t.Helper()
	dir := t.TempDir()
	bin, agent = filepath.Join(dir, "spritefwd"), filepath.Join(dir, "spritefwd-agent")
	for pkg, out := range map[string]string{".": bin, "../spritefwd-agent": agent} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return bin, agent
}

func startStdio(t *testing.T, bin, agent, mode string, daemon bool) *stdioRig {
	t.Helper()
	sshd := testsvc.StartSSHD(t)
	sim := spritestest.NewServer(spritestest.Options{Token: e2eToken, IdleSleep: -1, WakeDelay: 300 * time.Millisecond, MaxMessage: testsvc.SimMaxMessage(t)})
	t.Cleanup(sim.Close)
	_, port, _ := net.SplitHostPort(sshd.Addr)
	n, _ := strconv.Atoi(port)
	sim.Map("db", n, sshd.Addr)
	dir := t.TempDir()
	rig := &stdioRig{t: t, sim: sim, sshd: sshd, dir: dir, bin: bin, socket: filepath.Join(dir, "run", "spritefwd.sock"), port: port}
	os.MkdirAll(filepath.Join(dir, "config", "spritefwd"), 0o700)
	os.MkdirAll(filepath.Join(dir, "run"), 0o700)
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(e2eToken+"\n"), 0o600)
	// The forward to sshd's port gives stdio its mode; without a daemon it
	// is not listened on.
	cfgPath := filepath.Join(dir, "config", "spritefwd", "config.yaml")
	yaml := fmt.Sprintf("api_url: %s\ntoken_file: %s\nagent_binary: %s\nshutdown_grace: 1s\nhalf_close_timeout: 300ms\nforwards:\n  - {name: db-ssh, listen: 0, sprite: db, port: %s, mode: %s}\n",
		sim.URL, tokenFile, agent, port, mode)
	os.WriteFile(cfgPath, []byte(yaml), 0o600)
	rig.env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"), "SPRITES_TOKEN=")
	if daemon {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		log := zerolog.New(io.Discard)
		if testing.Verbose() {
			log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr})
		}
		rig.r = newRunner(runnerOptions{log: log, configPath: cfgPath, cfg: cfg, socket: rig.socket})
		if err := rig.r.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rig.r.Stop() })
	}
	// The block users paste, as spritefwd ssh-config prints it.
	var out, errOut bytes.Buffer
	if err := dispatch([]string{"ssh-config", "--path", bin, "--port", port}, &out, &errOut); err != nil {
		t.Fatalf("ssh-config: %v %s", err, errOut.String())
	}
	os.WriteFile(filepath.Join(dir, "ssh_config"), out.Bytes(), 0o600)
	return rig
}

// cmd runs program with the rig's environment.
func (r *stdioRig) cmd(ctx context.Context, program string, args ...string) *exec.Cmd {
	c := testsvc.Command(ctx, r.t, program, args...)
	c.Env = r.env
	return c
}

func (r *stdioRig) sshArgs(extra ...string) []string {
	return append(append([]string{"-F", filepath.Join(r.dir, "ssh_config"), "-i", r.sshd.Key}, r.sshd.KnownOK...), extra...)
}

func (r *stdioRig) ssh(command string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := r.cmd(ctx, "ssh", r.sshArgs(r.sshd.User+"@db.sprite", command)...).CombinedOutput()
	return string(out), err
}

// scp copies a file of n random bytes to the sprite and back, and checks
// both copies. during, if set, runs meanwhile, until stop closes.
func (r *stdioRig) scp(n int64, during func(stop <-chan struct{})) {
	r.t.Helper()
	dir := r.t.TempDir()
	src, mid, back := filepath.Join(dir, "src"), filepath.Join(dir, "mid"), filepath.Join(dir, "back")
	f, _ := os.Create(src)
	io.CopyN(f, rand.Reader, n)
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	done, stop := make(chan struct{}), make(chan struct{})
	if during != nil {
		go func() {
			defer close(done)
			during(stop)
		}()
	} else {
		close(done)
	}
	for _, hop := range [][2]string{{src, r.sshd.User + "@db.sprite:" + mid}, {r.sshd.User + "@db.sprite:" + mid, back}} {
		if out, err := r.cmd(ctx, "scp", r.sshArgs("-q", hop[0], hop[1])...).CombinedOutput(); err != nil {
			close(stop)
			<-done
			r.t.Fatalf("scp %s %s: %v\n%s", hop[0], hop[1], err, out)
		}
	}
	close(stop)
	<-done
	if a, b := fileSum(r.t, src), fileSum(r.t, back); a != b {
		r.t.Fatalf("the file came back different: %s, want %s", b, a)
	}
}

func fileSum(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

// row is the status row of stdio's connections to sshd in db.
func (r *stdioRig) row() (control.Forward, bool) {
	c := control.NewClient(r.socket)
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil {
		return control.Forward{}, false
	}
	for _, f := range st.Forwards {
		if f.Name == "stdio db:"+r.port {
			return f, true
		}
	}
	return control.Forward{}, false
}

// TestE2EStdio builds spritefwd and the agent once for its parts.
func TestE2EStdio(t *testing.T) {
	testsvc.Need(t, "ssh", "scp", "sshd")
	bin, agent := stdioBinaries(t)
	t.Run("ssh", func(t *testing.T) { testStdioSSH(t, bin, agent) })
	t.Run("scp through drops", func(t *testing.T) { testStdioScpThroughDrops(t, bin, agent) })
	t.Run("failures", func(t *testing.T) { testStdioFailures(t, bin, agent) })
}

// testStdioSSH: ssh and scp through the printed ~/.ssh/config block, to a
// sprite asleep at the start, in both modes, with and without a daemon.
func testStdioSSH(t *testing.T, bin, agent string) {
	for _, mode := range []string{"direct", "mux"} {
		for _, daemon := range []bool{true, false} {
			name := mode + "/no daemon"
			if daemon {
				name = mode + "/daemon"
			}
			t.Run(name, func(t *testing.T) {
				r := startStdio(t, bin, agent, mode, daemon)
				if err := r.sim.Sleep("db"); err != nil {
					t.Fatal(err)
				}
				out, err := r.ssh("echo hello from $((6*7))")
				if err != nil || !strings.Contains(out, "hello from 42") {
					t.Fatalf("ssh db.sprite: %v\n%s", err, out)
				}
				before, _ := r.sim.SpriteStats("db")
				r.scp(4<<20, nil)
				if !daemon {
					// Another stdio process, which finds the agent that the
					// one before deployed through the record it left.
					if after, _ := r.sim.SpriteStats("db"); mode == "mux" && after.Execs != before.Execs {
						t.Errorf("the second stdio process ran %d execs in the sprite, want none: the agent record was not used", after.Execs-before.Execs)
					}
					return
				}
				testsvc.Eventually(t, "stdio's connections to end", func() bool {
					row, _ := r.row()
					return row.Total == 3 && row.Open+row.Lingering == 0
				})
				row, _ := r.row()
				if row.Mode != mode || row.BytesIn < 4<<20 || row.BytesOut < 4<<20 || len(row.Errors) > 0 {
					t.Errorf("status row of stdio: %+v, want mode %s, 4 MiB each way and no errors", row, mode)
				}
			})
		}
	}
}

// testStdioScpThroughDrops: in mux mode the daemon resumes stdio's stream
// when the link drops under scp; the file arrives byte for byte.
func testStdioScpThroughDrops(t *testing.T, bin, agent string) {
	r := startStdio(t, bin, agent, "mux", true)
	var drops atomic.Int64
	r.scp(48<<20, func(stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			case <-time.After(700 * time.Millisecond):
				if row, _ := r.row(); row.Open > 0 {
					r.sim.DropLinks("db")
					drops.Add(1)
				}
			}
		}
	})
	row, _ := r.row()
	t.Logf("%d link drops, %d resumptions (latest took %v), %d connections", drops.Load(), row.Resumptions, row.ResumeTimes, row.Total)
	if drops.Load() == 0 || row.Resumptions == 0 {
		t.Fatalf("%d drops and %d resumptions: the test did not test resumption", drops.Load(), row.Resumptions)
	}
	if row.Total != 2 {
		t.Errorf("%d connections for two scp runs: a session was re-established", row.Total)
	}
}

// testStdioFailures: what the user must fix is one line on stderr and a
// non-zero exit; a link broken after data is an error exit, not a clean one.
func testStdioFailures(t *testing.T, bin, agent string) {
	for _, daemon := range []bool{true, false} {
		t.Run(fmt.Sprintf("daemon=%v", daemon), func(t *testing.T) {
			r := startStdio(t, bin, agent, "direct", daemon)
			r.sim.Map("db", 7000, testsvc.Serve(t, testsvc.Echo))
			for _, tt := range []struct{ sprite, port, want string }{
				{"nope", "22", "nope does not exist"},
				{"db", "23", "nothing listens on sprite db port 23"},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				var stderr bytes.Buffer
				c := r.cmd(ctx, r.bin, "stdio", tt.sprite, tt.port)
				c.Stdin, c.Stderr = strings.NewReader("hello"), &stderr
				err := c.Run()
				cancel()
				lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
				if err == nil || len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
					t.Errorf("stdio %s %s: %v, stderr %q; want an error exit and one line saying %q", tt.sprite, tt.port, err, stderr.String(), tt.want)
				}
			}

			// An echo session: bytes go and come back, then the link drops.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var stderr bytes.Buffer
			c := r.cmd(ctx, r.bin, "stdio", "db", "7000")
			in, _ := c.StdinPipe()
			out, _ := c.StdoutPipe()
			c.Stderr = &stderr
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			in.Write([]byte("ping\n"))
			buf := make([]byte, 5)
			if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "ping\n" {
				t.Fatalf("echo through stdio: %q, %v", buf, err)
			}
			r.sim.DropLinks("db")
			io.Copy(io.Discard, out)
			err := c.Wait()
			in.Close()
			if err == nil || !strings.Contains(stderr.String(), "db:7000") || !strings.Contains(stderr.String(), "broken") {
				t.Errorf("stdio after its link dropped: %v, stderr %q; want an error exit that says the link to db:7000 broke", err, stderr.String())
			}
		})
	}
}
