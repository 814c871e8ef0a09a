package tunnel_test

// End-to-end tests of the SOCKS port: real curl through it to web servers
// in two sprites, by SOCKS5 and by HTTP CONNECT.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// webSprites maps web:3000 and api:8080 to web servers that say who they
// are.
func webSprites(t *testing.T) map[string]string {
	maps := map[string]string{}
	for _, name := range []string{"web:3000", "api:8080"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", name)
		}))
		t.Cleanup(srv.Close)
		maps[name] = srv.Listener.Addr().String()
	}
	return maps
}

func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(t, time.Minute, "curl", append([]string{"-sS", "--max-time", "50"}, args...)...)
}

func TestE2ESOCKS(t *testing.T) {
	testsvc.Need(t, "curl")
	e := startE2E(t, spritestest.Options{}, webSprites(t), "socks: 127.0.0.1:0\n")
	addr := e.d.SOCKSAddr()
	if addr == "" {
		t.Fatalf("no SOCKS port:\n%s", e.logs)
	}

	// Two sprites in one run, by name and by name with the suffix.
	out, err := curl(t, "--socks5-hostname", addr, "http://web:3000/", "http://api.sprite:8080/")
	if err != nil || out != "hello from web:3000\nhello from api:8080\n" {
		t.Fatalf("curl through SOCKS: %v\n%s\n%s", err, out, e.logs)
	}
	// HTTP CONNECT on the same port, for tools that speak only HTTP proxies.
	out, err = curl(t, "--proxytunnel", "--proxy", "http://"+addr, "http://web:3000/")
	if err != nil || out != "hello from web:3000\n" {
		t.Fatalf("curl through HTTP CONNECT: %v\n%s", err, out)
	}

	// An address is refused: the destination must name the sprite.
	out, err = curl(t, "--socks5", addr, "http://127.0.0.1:3000/")
	if err == nil || !strings.Contains(out, "(8)") {
		t.Errorf("curl to an IP destination: %v, %q; want refused with reply 8, address type not supported", err, out)
	}
	t.Logf("curl to an IP destination: %s", strings.TrimSpace(out))
	// A sprite that does not exist is refused after one API call, which
	// is remembered.
	for i := range 2 {
		before := e.sim.Requests()
		out, err = curl(t, "--socks5-hostname", addr, "http://nope:80/")
		if err == nil || !strings.Contains(out, "(4)") {
			t.Errorf("curl to a sprite that does not exist: %v, %q; want refused with reply 4, host unreachable", err, out)
		}
		t.Logf("curl to a sprite that does not exist: %s", strings.TrimSpace(out))
		if asked := e.sim.Requests() - before; i == 1 && asked != 0 {
			t.Errorf("asked the API %d times about a sprite it was just told does not exist", asked)
		}
	}

	rows := map[string]int64{}
	for _, s := range e.d.Status() {
		rows[s.Name] = s.Total
	}
	if rows["socks web:3000"] != 2 || rows["socks api:8080"] != 1 || rows["socks nope:80"] != 0 {
		t.Errorf("status rows of the SOCKS port: %v; want web:3000 twice and api:8080 once", rows)
	}
}

func TestE2ESOCKSAuth(t *testing.T) {
	testsvc.Need(t, "curl")
	users := filepath.Join(t.TempDir(), "users")
	os.WriteFile(users, []byte("# who may use the SOCKS port\nme:s3cret\n"), 0o600)
	e := startE2E(t, spritestest.Options{}, webSprites(t), fmt.Sprintf("socks: 127.0.0.1:0\nsocks_users_file: %s\n", users))
	addr := e.d.SOCKSAddr()
	for _, tt := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"socks5, right password", []string{"--socks5-hostname", addr, "--proxy-user", "me:s3cret"}, true},
		{"socks5, wrong password", []string{"--socks5-hostname", addr, "--proxy-user", "me:guess"}, false},
		{"socks5, none", []string{"--socks5-hostname", addr}, false},
		{"http connect, right password", []string{"--proxytunnel", "--proxy", "http://" + addr, "--proxy-user", "me:s3cret"}, true},
		{"http connect, none", []string{"--proxytunnel", "--proxy", "http://" + addr}, false},
	} {
		out, err := curl(t, append(tt.args, "http://web:3000/")...)
		if ok := err == nil && out == "hello from web:3000\n"; ok != tt.ok {
			t.Errorf("%s: %v, %q; want success %v", tt.name, err, out, tt.ok)
		}
	}

	// A reload without socks_users_file restarts the port without
	// authentication; one without socks: closes it.
	for _, settings := range []string{"socks: 127.0.0.1:0\n", ""} {
		cfg, err := config.Parse("e2e.yaml", []byte(fmt.Sprintf("api_url: %s\ntoken_file: /nonexistent\n%s", e.sim.URL, settings)))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.d.Apply(cfg); err != nil {
			t.Fatal(err)
		}
		if settings == "" {
			if a := e.d.SOCKSAddr(); a != "" {
				t.Errorf("socks: removed, and the port still listens on %s", a)
			}
			if _, err := curl(t, "--socks5-hostname", addr, "http://web:3000/"); err == nil {
				t.Errorf("the old SOCKS port still answers after a reload removed it")
			}
			continue
		}
		addr = e.d.SOCKSAddr()
		if out, err := curl(t, "--socks5-hostname", addr, "http://web:3000/"); err != nil || out != "hello from web:3000\n" {
			t.Errorf("after a reload without users: %v, %q", err, out)
		}
	}
}
