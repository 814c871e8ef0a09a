package tunnel_test

// End-to-end tests of the agent record: a daemon started again reaches the
// agent the one before it left running, with no exec, and one whose record
// went stale finds its way to a working agent.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
	"github.com/spritefwd/spritefwd/tunnel"
)

// recordRig is a mux forward to an HTTP server in sprite box, whose
// daemon keeps its state in dir.
type recordRig struct {
	*e2e
	dir string
}

func startRecordRig(t *testing.T) *recordRig {
	t.Helper()
	testsvc.Need(t, "curl")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the sprite, %s\n", r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	dir := t.TempDir()
	e := startMuxTuned(t, func(o *tunnel.Options) { o.StateDir = dir }, spritestest.Options{}, "",
		"{name: web, listen: 0, sprite: box, port: "+port+", mode: mux}")
	return &recordRig{e2e: e, dir: dir}
}

// curl fetches a page through the forward with curl, a real client.
func (r *recordRig) curl(t *testing.T, page string) {
	t.Helper()
	out, err := run(t, time.Minute, "curl", "-sS", "--max-time", "50", "http://127.0.0.1:"+r.port(t, "web")+"/"+page)
	if err != nil || out != "hello from the sprite, /"+page+"\n" {
		t.Fatalf("curl /%s: %v: %q\n%s", page, err, out, r.logs)
	}
}

// restart stops the daemon, which leaves its agent running in the sprite,
// and starts a new one with the same config and state directory.
func (r *recordRig) restart(t *testing.T) {
	t.Helper()
	cfg := r.d.Config()
	r.d.Shutdown(time.Second)
	r.d = tunnel.New(tunnel.Options{
		Log:      zerolog.New(r.logs).Level(zerolog.DebugLevel),
		StateDir: r.dir,
		Getenv: func(k string) string {
			if k == config.TokenEnv {
				return e2eToken
			}
			return ""
		},
	})
	if err := r.d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
}

func (r *recordRig) record(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "agent-box.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (r *recordRig) execs(t *testing.T) int64 {
	t.Helper()
	st, ok := r.sim.SpriteStats("box")
	if !ok {
		t.Fatal("no sprite box")
	}
	return st.Execs
}

func (r *recordRig) agentFile(t *testing.T, name string) string {
	t.Helper()
	b, err := apiClient(t, r.e2e).ReadFile(context.Background(), "box", "/tmp/spritefwd/"+name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A daemon started again reaches the agent that the one before it
// deployed, with the record it left: no exec into the sprite, no deploy,
// the same agent process, and curl works through it. The record is the
// user's alone and the secret never reaches the log.
func TestE2EMuxRecordRestartRunsNoExec(t *testing.T) {
	t.Parallel()
	r := startRecordRig(t)
	r.curl(t, "first")
	rec := r.record(t)
	secret := r.agentFile(t, "secret")
	if rec["secret"] != secret || rec["port"] != float64(r.d.Config().AgentPort) || rec["protocol"] != float64(mux.Version) {
		t.Fatalf("record %v, want the deployment's secret, agent_port and protocol %d", rec, mux.Version)
	}
	if sum, _ := rec["sha256"].(string); len(sum) != 64 || !strings.HasPrefix(r.agentPathSum(t), sum[:16]) {
		t.Errorf("record's sha256 %q is not the deployed agent's (%s)", sum, r.agentPathSum(t))
	}
	if fi, err := os.Stat(filepath.Join(r.dir, "agent-box.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	pid := r.agentFile(t, "agent.pid")
	execs := r.execs(t)

	r.restart(t)
	r.curl(t, "again")
	r.sessionUp(t)
	if n := r.execs(t) - execs; n != 0 {
		t.Errorf("the restarted daemon ran %d execs in the sprite, want none\n%s", n, r.logs)
	}
	st := r.status(t, "web").Agent
	if st.State != "connected" || st.Deploys != 0 || st.Sessions != 1 {
		t.Errorf("status %+v, want connected with no deploy of its own", st)
	}
	if now := r.agentFile(t, "agent.pid"); now != pid {
		t.Errorf("the agent's pid changed from %s to %s", pid, now)
	}
	if strings.Contains(r.logs.String(), secret) {
		t.Error("the deployment secret is in the log")
	}
}

// sessionUp waits until status shows the agent session. A connection's
// first stream rides behind the daemon's proof, so its answer can reach
// curl while the pool is still writing the record and before the client
// has counted the session.
func (r *recordRig) sessionUp(t *testing.T) {
	t.Helper()
	testsvc.Eventually(t, "the agent session in status", func() bool { return r.status(t, "web").Agent.State == "connected" })
}

// agentPathSum is the running agent's binary name's hash part, which is
// the first 16 hex digits of its sha256.
func (r *recordRig) agentPathSum(t *testing.T) string {
	t.Helper()
	exe, err := os.Readlink("/proc/" + r.agentFile(t, "agent.pid") + "/exe")
	if err != nil {
		t.Skipf("the agent's executable: %v", err)
	}
	return strings.TrimPrefix(filepath.Base(exe), "spritefwd-agent-")
}

// A record gone stale: the sprite lost /tmp, agent and all, or another
// deployment replaced the secret; or one not to be used: for another
// api_url, or corrupt. The restarted daemon redeploys, or takes the agent
// that runs there with the secret its look reads; either way curl works,
// and the record is rewritten to what is true now.
func TestE2EMuxRecordStale(t *testing.T) {
	t.Parallel()
	t.Run("agent gone", func(t *testing.T) {
		t.Parallel()
		r := startRecordRig(t)
		r.curl(t, "first")
		old := r.record(t)["secret"]
		r.d.Shutdown(time.Second)
		killAgent(t, r.e2e)
		sprixec(t, r.e2e, "/tmp", "rm", "-rf", "spritefwd")
		execs := r.execs(t)

		r.restart(t)
		r.curl(t, "after")
		r.sessionUp(t)
		st := r.status(t, "web").Agent
		if st.State != "connected" || st.Deploys != 1 {
			t.Errorf("status %+v, want connected after one deploy", st)
		}
		// The look, which starts the agent it uploads.
		if n := r.execs(t) - execs; n != 1 {
			t.Errorf("%d execs, want 1 (the look)", n)
		}
		if rec := r.record(t); rec["secret"] == old || rec["secret"] != r.agentFile(t, "secret") {
			t.Errorf("the record was not rewritten with the new deployment's secret")
		}
		if !strings.Contains(r.logs.String(), "the agent this daemon remembered is not there as it was") {
			t.Errorf("no log line says the record was stale\n%s", r.logs)
		}
	})
	// The agent runs; the record does not lead to it, or is not used.
	// One look reads the secret, and the running agent is taken.
	for _, tc := range []struct {
		name, log string
		edit      func(rec map[string]any) []byte
	}{
		{"secret changed", "the agent this daemon remembered is not there as it was", func(rec map[string]any) []byte {
			rec["secret"] = mux.NewSecret() // as if another deployment had replaced it since
			b, _ := json.Marshal(rec)
			return b
		}},
		{"another api_url", "the agent record is for another api_url", func(rec map[string]any) []byte {
			rec["api_url"] = "https://api.example.com"
			b, _ := json.Marshal(rec)
			return b
		}},
		{"corrupt", "agent record unreadable", func(map[string]any) []byte { return []byte(`{"version":1,"sprite":"box","port":`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := startRecordRig(t)
			r.curl(t, "first")
			pid := r.agentFile(t, "agent.pid")
			if err := os.WriteFile(filepath.Join(r.dir, "agent-box.json"), tc.edit(r.record(t)), 0o600); err != nil {
				t.Fatal(err)
			}
			execs := r.execs(t)

			r.restart(t)
			r.curl(t, "after")
			r.sessionUp(t)
			st := r.status(t, "web").Agent
			if st.State != "connected" || st.Deploys != 0 {
				t.Errorf("status %+v, want connected to the running agent with no deploy", st)
			}
			if n := r.execs(t) - execs; n != 1 {
				t.Errorf("%d execs, want 1 (the look that reads the secret)", n)
			}
			if now := r.agentFile(t, "agent.pid"); now != pid {
				t.Errorf("the agent was replaced (pid %s, then %s): the look should have found it", pid, now)
			}
			if rec := r.record(t); rec["secret"] != r.agentFile(t, "secret") || rec["api_url"] != r.sim.URL {
				t.Errorf("the record was not rewritten with the secret the agent has and this api_url: %v", rec["api_url"])
			}
			if !strings.Contains(r.logs.String(), tc.log) {
				t.Errorf("no log line says %q\n%s", tc.log, r.logs)
			}
		})
	}
}
