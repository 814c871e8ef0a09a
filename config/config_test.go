package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseExample(t *testing.T) {
	src := `api_url: http://127.0.0.1:7070
token_file: /tmp/tok
keepalive: 5s
wake_timeout: 45s
forwards:
  - 5432:db:5432
  - "[::1]:2222:box:22"
  - name: web
    listen: localhost:8080
    sprite: web
    port: 3000
    keep_awake: always
`
	cfg, err := Parse("spritefwd.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Keepalive != 5*time.Second || cfg.WakeTimeout != 45*time.Second || cfg.ShutdownGrace != DefaultShutdownGrace {
		t.Errorf("durations %v %v %v", cfg.Keepalive, cfg.WakeTimeout, cfg.ShutdownGrace)
	}
	want := []Forward{
		{Name: "db:5432", Listen: "127.0.0.1:5432", Sprite: "db", Port: 5432, Host: "localhost", KeepAwake: WhileConnected, Mode: Direct, MaxConnections: DefaultMaxConnections},
		{Name: "box:22", Listen: "[::1]:2222", Sprite: "box", Port: 22, Host: "localhost", KeepAwake: WhileConnected, Mode: Direct, MaxConnections: DefaultMaxConnections},
		{Name: "web", Listen: "localhost:8080", Sprite: "web", Port: 3000, Host: "localhost", KeepAwake: Always, Mode: Direct, MaxConnections: DefaultMaxConnections},
	}
	if len(cfg.Forwards) != len(want) {
		t.Fatalf("got %d forwards", len(cfg.Forwards))
	}
	for i, f := range cfg.Forwards {
		if !f.Same(want[i]) {
			t.Errorf("forward %d = %+v\nwant %+v", i, f, want[i])
		}
	}
	if cfg.ResumeWindow != DefaultResumeWindow || cfg.ResumeBuffer != 64<<20 || cfg.AgentPort != DefaultAgentPort {
		t.Errorf("mux defaults: window %v buffer %d port %d", cfg.ResumeWindow, cfg.ResumeBuffer, cfg.AgentPort)
	}
	if cfg.Forwards[2].Pos != (Pos{8, 5}) {
		t.Errorf("web forward at %v, want 8:5", cfg.Forwards[2].Pos)
	}
}

func TestParseMuxSettings(t *testing.T) {
	cfg, err := Parse("m.yaml", []byte("agent_port: 7100\nagent_binary: /opt/spritefwd-linux-{arch}\nagent_dir: /home/sprite/.spritefwd/\nresume_window: 30s\nresume_buffer: 32MiB\nmux_memory: 1GiB\nmux_idle_timeout: 0s\nforwards:\n  - {sprite: db, port: 5432, listen: 5432, mode: mux}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AgentPort != 7100 || cfg.AgentBinary != "/opt/spritefwd-linux-{arch}" || cfg.AgentDir != "/home/sprite/.spritefwd" ||
		cfg.ResumeWindow != 30*time.Second || cfg.ResumeBuffer != 32<<20 || cfg.MuxMemory != 1<<30 || cfg.MuxIdleTimeout != 0 || cfg.Forwards[0].Mode != Mux {
		t.Errorf("parsed %+v", cfg)
	}
}

// TestParseErrors checks the position and the advice of each error.
func TestParseSprites(t *testing.T) {
	cfg, err := Parse("f.yaml", []byte("sprites:\n  db: {mode: mux}\n  web: {keep_awake: never, host: 127.0.0.1}\n  box:\n"))
	if err != nil {
		t.Fatal(err)
	}
	off := AutoForward{Listen: DefaultBind}
	want := map[string]SpriteSettings{
		"db":  {Host: DefaultHost, KeepAwake: DefaultKeepAwake, Mode: Mux, Auto: off, Pos: Pos{2, 3}},
		"web": {Host: "127.0.0.1", KeepAwake: Never, Mode: DefaultMode, Auto: off, Pos: Pos{3, 3}},
		"box": {Host: DefaultHost, KeepAwake: DefaultKeepAwake, Mode: DefaultMode, Auto: off, Pos: Pos{4, 3}},
	}
	if !reflect.DeepEqual(cfg.Sprites, want) {
		t.Errorf("sprites %+v, want %+v", cfg.Sprites, want)
	}
}

func TestParseAutoForward(t *testing.T) {
	cfg, err := Parse("f.yaml", []byte("sprites:\n  dev:\n    auto_forward: true\n    only: [3000-3999, 9229]\n    exclude: \"3001,3002-3003\"\n    auto_listen: localhost\n"))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Sprites["dev"].Auto
	want := AutoForward{On: true, Only: PortSet{{3000, 3999}, {9229, 9229}}, Exclude: PortSet{{3001, 3001}, {3002, 3003}}, Listen: "localhost"}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("auto %+v, want %+v", a, want)
	}
	if !a.Only.Contains(3500) || a.Only.Contains(4000) || !a.Exclude.Contains(3003) || a.Only.String() != "3000-3999,9229" {
		t.Errorf("sets: only %v exclude %v", a.Only, a.Exclude)
	}
	for _, tt := range []struct{ src, want string }{
		{"sprites:\n  dev: {only: [3000]}\n", "2:3: sprites: dev: only and exclude narrow auto_forward; add auto_forward: true"},
		{"sprites:\n  dev: {auto_forward: true, only: [3999-3000]}\n", `2:36: only: "3999-3000": want a port 1-65535 or a range`},
		{"sprites:\n  dev: {auto_forward: true, exclude: [0]}\n", `exclude: "0": want a port`},
		{"sprites:\n  dev: {auto_forward: true, auto_listen: 0.0.0.0}\n", "auto_listen 0.0.0.0 is not loopback; set allow_public: true"},
		{"sprites:\n  dev: {auto_forward: yes}\n", "auto_forward must be true or false"},
		{"sprites:\n  dev: {auto_forwards: true}\n", `did you mean "auto_forward"?`},
	} {
		_, err := Parse("f.yaml", []byte(tt.src))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.src, err, tt.want)
		}
	}
	if _, err := Parse("f.yaml", []byte("allow_public: true\nsprites:\n  dev: {auto_forward: true, auto_listen: 0.0.0.0}\n")); err != nil {
		t.Errorf("auto_listen 0.0.0.0 with allow_public: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		src  string
		want []string // each "line:col: fragment"
	}{
		{"unknown key", "forwards:\n  - sprite: db\n    prot: 5432\n", []string{`3:5: unknown forward key "prot"; did you mean "port"?`, `2:5: forward is missing port:`}},
		{"unknown top key", "keepalives: 5s\n", []string{`1:1: unknown top-level key "keepalives"; did you mean "keepalive"?`}},
		{"bad port", "forwards:\n  - sprite: db\n    port: 70000\n", []string{`3:11: port 70000 is out of range`}},
		{"string port", "forwards:\n  - sprite: db\n    port: \"5432\"\n", []string{`3:11: port must be a whole number`}},
		{"bad compact", "forwards:\n  - 5432:db\n", []string{`2:5: rule "5432:db": want [bind:]localport:sprite:port`}},
		{"compact port", "forwards:\n  - 99999:db:5432\n", []string{`2:5: rule "99999:db:5432": local port "99999"`}},
		{"duplicate listen", "forwards:\n  - 5432:db:5432\n  - 5432:other:5432\n", []string{`3:5: listen 127.0.0.1:5432 overlaps the forward at line 2`}},
		{"localhost overlaps", "forwards:\n  - localhost:5432:db:5432\n  - 127.0.0.1:5432:other:1\n", []string{`3:5: listen 127.0.0.1:5432 overlaps`}},
		{"duplicate name", "forwards:\n  - {name: a, sprite: db, port: 1, listen: 1}\n  - {name: a, sprite: db, port: 2, listen: 2}\n", []string{`3:5: forward name "a" is already used at line 2`}},
		{"missing sprite", "forwards:\n  - port: 5432\n", []string{`2:5: forward is missing sprite:`}},
		{"public", "forwards:\n  - 0.0.0.0:5432:db:5432\n", []string{`2:5: listen "0.0.0.0:5432" is reachable from other machines`}},
		{"empty bind", "forwards:\n  - \":5432:db:5432\"\n", []string{`2:5: rule ":5432:db:5432": empty bind address`}},
		{"hostname listen", "forwards:\n  - {sprite: db, port: 1, listen: \"example.com:1\"}\n", []string{`must be an IP address or localhost`}},
		{"bare duration", "keepalive: 15\n", []string{`1:12: keepalive "15" is not a duration such as 15s or 2m (a bare number has no unit: write 15s)`}},
		{"zero keepalive", "keepalive: 0s\n", []string{`1:12: keepalive 0s is out of range`}},
		{"keep_awake", "forwards:\n  - {sprite: db, port: 1, keep_awake: sometimes}\n", []string{`keep_awake "sometimes": want while_connected, always or never`}},
		{"mode", "forwards:\n  - {sprite: db, port: 1, mode: tunnel}\n", []string{`2:33: mode "tunnel": want direct (a WebSocket per connection) or mux`}},
		{"mux host", "forwards:\n  - {sprite: db, port: 1, host: redis.internal, mode: mux}\n", []string{`2:5: host "redis.internal": a mux forward reaches only loopback`}},
		{"resume_buffer", "resume_buffer: 4MB\n", []string{`1:16: resume_buffer must be a size such as 4MiB`}},
		{"resume_buffer small", "resume_buffer: 1KiB\n", []string{`1:16: resume_buffer 1KiB is out of range`}},
		{"mux_memory", "mux_memory: 100GiB\n", []string{`1:13: mux_memory 100GiB is out of range`}},
		{"agent_dir", "agent_dir: tmp/x\n", []string{`1:12: agent_dir "tmp/x": want an absolute path`}},
		{"resume_window", "resume_window: 2\n", []string{`1:16: resume_window "2" is not a duration such as 15s or 2m (a bare number has no unit: write 2s)`}},
		{"yaml syntax", "forwards:\n  - a: b\n   c: d\n", []string{`f.yaml:1:1: YAML syntax: did not find expected '-' indicator`}},
		{"forwards not list", "forwards: 5432:db:5432\n", []string{`1:11: forwards must be a list`}},
		{"socks public", "socks: 0.0.0.0:1080\n", []string{`1:8: socks "0.0.0.0:1080" is reachable from other machines; use 127.0.0.1`}},
		{"socks public, no users", "allow_public: true\nsocks: 0.0.0.0:1080\n", []string{`2:8: socks "0.0.0.0:1080" is reachable from other machines, so clients must authenticate: set socks_users_file`}},
		{"socks address", "socks: db:1080\n", []string{`1:8: socks: want an IP address and port`}},
		{"socks suffix", "socks_suffix: sprite\n", []string{`1:15: socks_suffix "sprite": want a domain suffix`}},
		{"sprites not a mapping", "sprites: [db]\n", []string{`1:10: sprites must be a mapping`}},
		{"sprite key", "sprites:\n  db: {port: 5432}\n", []string{`2:8: unknown sprite key "port"`}},
		{"sprite mode", "sprites:\n  db: {mode: tunnel}\n", []string{`2:14: mode "tunnel": want direct`}},
		{"sprite name", "sprites:\n  \"d b\": {mode: mux}\n", []string{`2:3: sprites: "d b": use letters`}},
		{"sprite mux host", "sprites:\n  db: {mode: mux, host: redis.internal}\n", []string{`2:3: sprites: db: host "redis.internal": mux mode reaches only loopback`}},
		{"api_url scheme", "api_url: ftp://x\n", []string{`1:10: api_url: "ftp://x" must start with https://`}},
		{"api_url plain http", "api_url: http://api.sprites.dev\n", []string{`1:10: api_url: "http://api.sprites.dev": plain http sends the token in clear to api.sprites.dev`, "set allow_insecure_http: true"}},
		{"allow_insecure_http", "allow_insecure_http: yes please\n", []string{`1:22: allow_insecure_http must be true or false`}},
		{"duplicate key", "keepalive: 5s\nkeepalive: 6s\n", []string{`2:1: key "keepalive" appears twice`}},
		{"two documents", "keepalive: 5s\n---\nkeepalive: 6s\n", []string{`a second YAML document`}},
		{"self merge", "forwards:\n  - &b {<<: *b, name: x, port: 1, listen: 2}\n", []string{`refer to themselves`}},
		{"bad sprite name", "forwards:\n  - 1:db/x:2\n", []string{`sprite "db/x": use letters`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.src))
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			got := err.Error()
			for _, w := range tt.want {
				if w[0] >= '0' && w[0] <= '9' {
					w = "f.yaml:" + w
				}
				if !strings.Contains(got, w) {
					t.Errorf("errors:\n%s\nwant one containing %s", got, w)
				}
			}
		})
	}
}

// The token rides every API call, so plain http is for the emulator on
// loopback, or for a user who says so.
func TestAPIURLPlainHTTP(t *testing.T) {
	for _, tt := range []struct {
		src string
		ok  bool
	}{
		{"api_url: https://api.sprites.dev\n", true},
		{"api_url: http://127.0.0.1:7070\n", true},
		{"api_url: http://127.8.9.10:7070/\n", true},
		{"api_url: http://[::1]:7070\n", true},
		{"api_url: http://localhost:7070\n", true},
		{"api_url: http://LocalHost\n", true},
		{"api_url: http://api.sprites.dev\n", false},
		{"api_url: http://10.0.0.5:7070\n", false},
		{"api_url: http://[::2]:7070\n", false},
		{"api_url: http://localhost.example.com\n", false},
		{"api_url: http://127.0.0.1.nip.io\n", false},
		{"api_url: http://api.sprites.dev\nallow_insecure_http: true\n", true},
		{"allow_insecure_http: true\napi_url: http://10.0.0.5:7070\n", true},
		{"api_url: http://10.0.0.5:7070\nallow_insecure_http: false\n", false},
	} {
		cfg, err := Parse("f.yaml", []byte(tt.src))
		if tt.ok != (err == nil) {
			t.Errorf("Parse(%q): %v, want ok %v", tt.src, err, tt.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "f.yaml:") {
			t.Errorf("Parse(%q): %v, want a positioned error", tt.src, err)
		}
		if err == nil && !strings.Contains(tt.src, cfg.APIURL) {
			t.Errorf("Parse(%q): api_url %q", tt.src, cfg.APIURL)
		}
	}
}

func TestParseEmptyAndAnchors(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "forwards:\n"} {
		cfg, err := Parse("f", []byte(src))
		if err != nil || len(cfg.Forwards) != 0 {
			t.Errorf("Parse(%q) = %v, %v; want an empty config", src, cfg, err)
		}
	}
	src := "base: &b {sprite: db, keep_awake: never}\nforwards:\n  - {<<: *b, port: 1, listen: 1}\n  - {<<: *b, port: 2, listen: 2}\n"
	_, err := Parse("f", []byte(src))
	if err == nil || !strings.Contains(err.Error(), `unknown top-level key "base"`) {
		t.Fatalf("want the unknown key reported, got %v", err)
	}
	src = "forwards:\n  - &b {sprite: db, keep_awake: never, port: 1}\n  - {<<: *b, name: two, port: 2, listen: 2}\n"
	cfg, err := Parse("f", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if f := cfg.Forwards[1]; f.Sprite != "db" || f.KeepAwake != Never || f.Port != 2 {
		t.Errorf("merged forward %+v", f)
	}
}

func TestParseYAMLBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 30; i++ {
		prev := "*a" + string(rune('0'+(i-1)%10)) + strings.Repeat("_", (i-1)/10)
		name := "a" + string(rune('0'+i%10)) + strings.Repeat("_", i/10)
		b.WriteString(name + ": &" + name + " [" + strings.Repeat(prev+", ", 9) + prev + "]\n")
	}
	b.WriteString("forwards: *a9__\n")
	start := time.Now()
	_, err := Parse("bomb.yaml", []byte(b.String()))
	if err == nil {
		t.Fatal("a YAML bomb parsed")
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("bomb took %v: aliases expanded", time.Since(start))
	}
}

// mergeBomb is levels anchored mappings, each merging the one before it
// width times, merged in at the top level (or, in a forward, when
// inForward): width^levels entries from a file of a few KB. The returned
// line is where the top merge is, which the error must name.
func mergeBomb(levels, width int, inForward bool) (src string, line int) {
	var b strings.Builder
	b.WriteString("l0: &l0 {sprite: db, port: 1, listen: 1}\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "l%d: &l%d\n", i, i)
		for j := 0; j < width; j++ {
			fmt.Fprintf(&b, "  <<: *l%d\n", i-1)
		}
	}
	line = strings.Count(b.String(), "\n") + 1
	if inForward {
		fmt.Fprintf(&b, "forwards:\n  - {<<: *l%d, listen: 99}\n", levels)
		line++
	} else {
		fmt.Fprintf(&b, "<<: *l%d\nforwards: [1:db:1]\n", levels)
	}
	return b.String(), line
}

// TestParseMergeBomb: merge keys that multiply are cut off after a bounded
// amount of work, with one error at the merge that started it. The work is
// counted in allocations, not timed: the bombs here cost millions before.
func TestParseMergeBomb(t *testing.T) {
	aliasBomb := func() (string, int) {
		var b strings.Builder
		b.WriteString("forwards:\n  - &big {sprite: db, port: 1, listen: 1")
		for i := 0; i < 500; i++ {
			fmt.Fprintf(&b, ", k%d: %d", i, i)
		}
		b.WriteString("}\n")
		line := 3
		for i := 0; i < 500; i++ {
			b.WriteString("  - *big\n")
		}
		return b.String(), line + maxExpanded/501
	}
	// Parsing a file and walking maxExpanded entries takes tens of
	// thousands of allocations (some more for unknown keys, which are
	// reported); expanding these bombs took millions.
	for _, tt := range []struct {
		name      string
		build     func() (string, int)
		col       int
		maxAllocs float64
	}{
		{"the issue's: 4 levels of 40, 1.6 KB", func() (string, int) { return mergeBomb(4, 40, false) }, 1, 100_000},
		{"3 levels of 100", func() (string, int) { return mergeBomb(3, 100, false) }, 1, 100_000},
		{"in a forward", func() (string, int) { return mergeBomb(3, 100, true) }, 6, 100_000},
		{"2 levels of 3000", func() (string, int) { return mergeBomb(2, 3000, false) }, 1, 100_000},
		{"500 aliases of a 500-key forward", aliasBomb, 5, 1_000_000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, line := tt.build()
			var err error
			allocs := testing.AllocsPerRun(1, func() { _, err = Parse("bomb.yaml", []byte(src)) })
			es, ok := err.(Errors)
			if !ok || len(es) != 1 {
				t.Fatalf("got %d errors (%T), want one:\n%.2000v", len(es), err, err)
			}
			want := fmt.Sprintf("bomb.yaml:%d:%d: aliases and merge keys (<<) bring in more than %d entries", line, tt.col, maxExpanded)
			if !strings.HasPrefix(es[0].Error(), want) {
				t.Errorf("got %v\nwant %s...", es[0], want)
			}
			t.Logf("%.0f allocations for %d bytes", allocs, len(src))
			if allocs > tt.maxAllocs {
				t.Errorf("%.0f allocations for a %d-byte file: the expansion is not bounded", allocs, len(src))
			}
		})
	}
}

// TestParseMergesAndAnchors: what a real config does with anchors and
// merges loads, nested merges and aliases of whole forwards included.
func TestParseMergesAndAnchors(t *testing.T) {
	src := `forwards:
  - &db {name: db, sprite: db, port: 5432, listen: 5432, keep_awake: never}
  - &web
    <<: *db
    name: web
    sprite: web
    port: 3000
    listen: 3000
  - {<<: *web, name: web-debug, port: 9229, listen: 9229}
  - {<<: *web, name: web-api, port: 8000, listen: 8000}
`
	cfg, err := Parse("f.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name, sprite string
		port         int
	}{{"db", "db", 5432}, {"web", "web", 3000}, {"web-debug", "web", 9229}, {"web-api", "web", 8000}}
	if len(cfg.Forwards) != len(want) {
		t.Fatalf("%d forwards, want %d", len(cfg.Forwards), len(want))
	}
	for i, w := range want {
		f := cfg.Forwards[i]
		if f.Name != w.name || f.Sprite != w.sprite || f.Port != w.port || f.KeepAwake != Never {
			t.Errorf("forward %d: %+v, want %+v with keep_awake never", i, f, w)
		}
	}
}

func TestParseLargeFile(t *testing.T) {
	_, err := Parse("big.yaml", make([]byte, MaxFileSize+1))
	if err == nil || !strings.Contains(err.Error(), "big.yaml:1:1: file is larger") {
		t.Fatalf("got %v", err)
	}
}

func TestParseRule(t *testing.T) {
	for _, tt := range []struct {
		in, listen, sprite string
		port               int
		ok                 bool
	}{
		{"5432:db:5432", "127.0.0.1:5432", "db", 5432, true},
		{"localhost:8080:web:3000", "localhost:8080", "web", 3000, true},
		{"[::1]:22:box:22", "[::1]:22", "box", 22, true},
		{"0.0.0.0:80:web:80", "0.0.0.0:80", "web", 80, true},
		{"db:5432", "", "", 0, false},
		{"a:b:c:d:e", "", "", 0, false},
		{"0:db:1", "127.0.0.1:0", "db", 1, true},
		{"-1:db:1", "", "", 0, false},
		{"1:db:0", "", "", 0, false},
		{"[::1:22:box:22", "", "", 0, false},
		{"host.example:1:db:1", "", "", 0, false},
		{"1::1", "", "", 0, false},
	} {
		f, err := ParseRule(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseRule(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && (f.Listen != tt.listen || f.Sprite != tt.sprite || f.Port != tt.port) {
			t.Errorf("ParseRule(%q) = %+v", tt.in, f)
		}
	}
}

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }

	if _, err := LoadToken(path, getenv); err == nil || !strings.Contains(err.Error(), "SPRITES_TOKEN") {
		t.Fatalf("missing file: %v", err)
	}
	os.WriteFile(path, []byte("org/1/2/secret\n"), 0o644)
	tok, err := LoadToken(path, getenv)
	if err != nil || tok.Value() != "org/1/2/secret" || tok.Warning == "" {
		t.Fatalf("token %v err %v warning %q", tok, err, tok.Warning)
	}
	os.Chmod(path, 0o600)
	if tok, _ := LoadToken(path, getenv); tok.Warning != "" {
		t.Errorf("0600 file warned: %s", tok.Warning)
	}
	env[TokenEnv] = "from-env"
	tok, _ = LoadToken(path, getenv)
	if tok.Value() != "from-env" || tok.Source != "$SPRITES_TOKEN" {
		t.Errorf("env did not win: %v", tok)
	}
	if s := tok.String() + " " + tok.GoString(); strings.Contains(s, "from-env") {
		t.Errorf("token printed: %s", s)
	}
}

// TestLoadTokenBounded: token_file is read up to 4 KiB; a larger file,
// or one that never ends, is refused instead of read into memory.
func TestLoadTokenBounded(t *testing.T) {
	dir := t.TempDir()
	getenv := func(string) string { return "" }
	for _, tt := range []struct {
		name string
		size int
		ok   bool
	}{
		{"a token", 64, true},
		{"at the limit", maxTokenFile, true},
		{"over the limit", maxTokenFile + 1, false},
		{"a megabyte", 1 << 20, false},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
		os.WriteFile(path, bytes.Repeat([]byte{'t'}, tt.size), 0o600)
		tok, err := LoadToken(path, getenv)
		if tt.ok && (err != nil || len(tok.Value()) != tt.size) {
			t.Errorf("%s: %v", tt.name, err)
		}
		if !tt.ok && (err == nil || !strings.Contains(err.Error(), path+" is larger than 4096 bytes")) {
			t.Errorf("%s: got %v, want it refused as too large", tt.name, err)
		}
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		if _, err := LoadToken("/dev/zero", getenv); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("/dev/zero: %v", err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"forwards:\n  - 5432:db:5432\n",
		"api_url: http://127.0.0.1:7070\nkeepalive: 5s\nforwards:\n  - name: web\n    listen: localhost:8080\n    sprite: web\n    port: 3000\n",
		"forwards:\n  - &b {sprite: db, port: 1}\n  - {<<: *b, name: x, port: 2, listen: 2}\n",
		"a: &a [x, x]\nb: &b [*a, *a]\nforwards: *b\n",
		"forwards: [1:a:1, 1:b:1]\n", "keepalive: 15\n", "---\n---\n", "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			for _, e := range err.(Errors) {
				if e.Line < 1 || e.Col < 1 || e.Msg == "" {
					t.Fatalf("error without a position: %+v", e)
				}
			}
			return
		}
		for _, fw := range cfg.Forwards {
			if fw.Port < 1 || fw.Port > 65535 || fw.Sprite == "" || fw.Listen == "" || fw.Name == "" || strings.HasSuffix(fw.Listen, ":-1") {
				t.Fatalf("accepted an invalid forward %+v", fw)
			}
		}
	})
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"5432:db:5432", "[::1]:22:box:22", "localhost:8080:web:3000", ":1:a:1", "[::1:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fw, err := ParseRule(s)
		if err == nil && (fw.Port < 1 || fw.Port > 65535 || fw.Sprite == "" || fw.Listen == "") {
			t.Fatalf("ParseRule(%q) accepted %+v", s, fw)
		}
	})
}

func TestBadConfigInputs(t *testing.T) {
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.yaml")
	f, _ := os.Create(huge)
	f.WriteString("forwards:\n")
	for f.Sync(); ; {
		st, _ := f.Stat()
		if st.Size() > 10<<20 {
			break
		}
		f.WriteString(strings.Repeat("  - 5432:db:5432\n", 10000))
	}
	f.Close()
	if _, err := Load(huge); err == nil || !strings.Contains(err.Error(), "huge.yaml:1:1: file is larger than") {
		t.Errorf("10 MB file: %v", err)
	}
	cfg, err := Parse("u.yaml", []byte("forwards:\n  - {name: \"データベース 🐘\", listen: 1, sprite: db, port: 5432}\n"))
	if err != nil || cfg.Forwards[0].Name != "データベース 🐘" {
		t.Errorf("unicode name: %v", err)
	}
	for _, src := range []string{
		"forwards:\n  - {name: \"a\\u0000b\", listen: 1, sprite: db, port: 1}\n",
		"forwards:\n  - {listen: 1, sprite: \"データ\", port: 1}\n",
		"forwards:\n  - {listen: 1, sprite: db, port: 99999999999999999999}\n",
		"forwards:\n  - {listen: 1, sprite: db, port: -1}\n",
		"max_message: 1\n",
		"wake_timeout: 1000000h\n",
		"forwards:\n  - {listen: 1, sprite: db, port: 1, max_connections: 0}\n",
	} {
		if _, err := Parse("bad.yaml", []byte(src)); err == nil || !strings.HasPrefix(err.Error(), "bad.yaml:") {
			t.Errorf("Parse(%q) = %v, want a positioned error", src, err)
		}
	}
}
