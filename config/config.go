// Package config reads spritefwd's YAML file: global settings and forward
// rules (local port → sprite:port). It validates everything up front and
// reports every problem as file:line:col with what to write instead, so a
// bad edit can be rejected while the running config keeps serving.
package config

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// KeepAwake says when spritefwd keeps a forward's sprite from sleeping.
type KeepAwake string

const (
	// WhileConnected pings live links only, so an idle forward lets its sprite sleep.
	WhileConnected KeepAwake = "while_connected"
	// Always keeps the sprite awake even with no connections.
	Always KeepAwake = "always"
	// Never sends no pings at all.
	Never KeepAwake = "never"
)

// Mode is how a forward carries connections.
type Mode string

const (
	// Direct opens one proxy WebSocket per local connection.
	Direct Mode = "direct"
	// Mux carries every connection to a sprite as a stream on one link to
	// an agent inside it: no per-connection handshake, and streams that
	// survive a dropped link.
	Mux Mode = "mux"
)

// Config is a validated configuration file.
type Config struct {
	File             string   // path it was read from, for messages
	Sum              [32]byte // sha256 of the file as Load read it; see WatchOptions.Loaded
	APIURL           string
	TokenFile        string // as written; see Token
	CAFile           string // "~/" expanded; empty: the system's roots
	Keepalive        time.Duration
	WakeTimeout      time.Duration
	ShutdownGrace    time.Duration
	HalfCloseTimeout time.Duration
	MaxMessage       int
	// WarmLinks is how many spare proxy links a sprite in use keeps
	// upgraded for its next direct-mode connections; 0 turns them off.
	WarmLinks     int
	WarmLinger    time.Duration
	MetricsListen string
	AllowPublic   bool
	// AllowInsecureHTTP lets api_url be http:// to a host that is not
	// loopback, which sends the token in clear.
	AllowInsecureHTTP bool
	// Mux mode.
	AgentPort      int
	AgentBinary    string // linux agent binary to upload; {arch} becomes amd64 or arm64
	AgentDir       string
	MuxIdleTimeout time.Duration
	ResumeWindow   time.Duration
	ResumeBuffer   int
	MuxMemory      int // what the daemon's stream windows hold together, beyond each one's first 256 KiB
	Forwards       []Forward
	// SOCKS is where the SOCKS5 (and HTTP CONNECT) front listens, if
	// anywhere; SOCKSSuffix is stripped from destination names, and
	// SOCKSUsersFile holds the user:password lines clients must give.
	SOCKS          string
	SOCKSSuffix    string
	SOCKSUsersFile string
	// Sprites are per-sprite settings for fronts without a forward of
	// their own (stdio, SOCKS), by sprite name.
	Sprites map[string]SpriteSettings
}

// Forward is one rule: accept on Listen, carry to Host:Port inside Sprite.
// A Listen port of 0 asks the system for a free port, as kubectl does.
type Forward struct {
	Name           string
	Listen         string // host:port; host "localhost" means 127.0.0.1 and ::1
	Sprite         string
	Port           int
	Host           string
	KeepAwake      KeepAwake
	Mode           Mode
	AllowPublic    bool
	MaxConnections int
	Pos            Pos // where the rule starts in the file
}

// Same reports whether two rules would behave identically, ignoring where
// they sit in the file. A reload keeps a forward whose rule is the Same.
func (f Forward) Same(g Forward) bool {
	f.Pos, g.Pos = Pos{}, Pos{}
	return f == g
}

// Target renders the forward's destination as sprite:port.
func (f Forward) Target() string { return f.Sprite + ":" + strconv.Itoa(f.Port) }

// Pos is a 1-based position in the file.
type Pos struct{ Line, Col int }

// Error is one problem in a config file.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(path, data)
	if cfg != nil {
		cfg.Sum = sha256.Sum256(data)
	}
	return cfg, err
}

// Default returns a config with every default and no forwards.
func Default() *Config {
	return &Config{
		APIURL: DefaultAPIURL, TokenFile: DefaultTokenFile,
		Keepalive: DefaultKeepalive, WakeTimeout: DefaultWakeTimeout, ShutdownGrace: DefaultShutdownGrace,
		HalfCloseTimeout: DefaultHalfCloseTimeout, MaxMessage: DefaultMaxMessage,
		WarmLinks: DefaultWarmLinks, WarmLinger: DefaultWarmLinger,
		AgentPort: DefaultAgentPort, AgentDir: DefaultAgentDir, MuxIdleTimeout: DefaultMuxIdleTimeout,
		ResumeWindow: DefaultResumeWindow, ResumeBuffer: DefaultResumeBuffer, MuxMemory: DefaultMuxMemory,
		SOCKSSuffix: DefaultSOCKSSuffix,
	}
}

// DefaultForward is a rule with every default and no name, listen
// address, sprite or port.
func DefaultForward() Forward { return defaultForward() }

// defaultForward is a rule with every default and nothing of its own.
func defaultForward() Forward {
	return Forward{Host: DefaultHost, KeepAwake: DefaultKeepAwake, Mode: DefaultMode, MaxConnections: DefaultMaxConnections}
}

// Parse validates data as the contents of file. The error, if any, is Errors.
func Parse(file string, data []byte) (*Config, error) {
	p := &parser{file: file}
	cfg := Default()
	cfg.File = file
	if len(data) > MaxFileSize {
		p.errf(Pos{1, 1}, "file is larger than %d bytes; a spritefwd config is a few hundred lines at most", MaxFileSize)
		return nil, p.errs
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, nil // empty file: no forwards, which the daemon reports
		}
		p.yamlErr(err)
		return nil, p.errs
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		pos := Pos{1, 1}
		if err == nil {
			pos = at(&extra)
		}
		p.errf(pos, "a second YAML document (---) is not allowed; put every forward under one forwards: list")
		return nil, p.errs
	}
	p.top(cfg, &doc)
	if p.expandErr != nil {
		// What follows from entries cut short would only confuse.
		return nil, Errors{p.expandErr}
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool {
			a, b := p.errs[i], p.errs[j]
			return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
		})
		return nil, p.errs
	}
	return cfg, nil
}

type parser struct {
	file string
	errs Errors
	// reported holds every error already in errs: an error inside an
	// anchor that is merged many times is worth one line.
	reported map[Error]bool
	// expanded counts the entries that aliases and merge keys brought in,
	// against maxExpanded; expandAt is the alias or << being expanded, and
	// expandErr is set once the count runs over.
	expanded  int
	expandAt  Pos
	expandErr *Error
}

func (p *parser) errf(pos Pos, format string, args ...any) {
	e := Error{File: p.file, Line: pos.Line, Col: pos.Col, Msg: fmt.Sprintf(format, args...)}
	if p.reported == nil {
		p.reported = map[Error]bool{}
	}
	if !p.reported[e] {
		p.reported[e] = true
		p.errs = append(p.errs, &e)
	}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlErr turns the YAML library's syntax errors into file:line:col form.
func (p *parser) yamlErr(err error) {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.errf(Pos{line, 1}, "YAML syntax: %s", m[2])
		return
	}
	p.errf(Pos{1, 1}, "YAML syntax: %s", strings.TrimPrefix(msg, "yaml: "))
}

func at(n *yaml.Node) Pos { return Pos{n.Line, n.Column} }

// deref follows aliases. Anchors are allowed: the walk below descends only
// into the few shapes the schema has, and pairsDepth bounds the entries
// that aliases and merges bring in, so an alias bomb cannot expand.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

type pair struct{ key, val *yaml.Node }

// pairs lists a mapping's entries, expanding merge keys (<<) and reporting
// duplicates, which yaml.v3 itself lets through on Node decoding.
func (p *parser) pairs(n *yaml.Node, what string) []pair {
	return p.pairsDepth(n, what, 0)
}

// maxMergeDepth bounds merge keys, which can refer to themselves.
const maxMergeDepth = 4

// maxExpanded bounds the entries that aliases and merge keys bring into
// one document. Each level of merges multiplies them: four levels of 40
// "<<: *prev" in 1.6 KB name 2.5 million, which took seconds while holding
// the reload lock. A real config brings in a few hundred.
const maxExpanded = 10000

func (p *parser) pairsDepth(n *yaml.Node, what string, depth int) []pair {
	if p.expandErr != nil {
		return nil
	}
	// Entries written out once are bounded by the file's size; those
	// reached through an alias or a merge are not, so they are counted.
	counted := depth > 0 || n.Kind == yaml.AliasNode
	if depth == 0 && n.Kind == yaml.AliasNode {
		p.expandAt = at(n)
	}
	n = deref(n)
	if depth > maxMergeDepth {
		p.errf(at(n), "merge keys (<<) nest more than %d deep or refer to themselves", maxMergeDepth)
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errf(at(n), "%s must be a mapping (key: value lines)", what)
		return nil
	}
	var out, merged []pair
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if counted {
			if p.expanded++; p.expanded > maxExpanded {
				p.expandErr = &Error{File: p.file, Line: p.expandAt.Line, Col: p.expandAt.Col,
					Msg: fmt.Sprintf("aliases and merge keys (<<) bring in more than %d entries here: each level multiplies them; write the keys out, or merge fewer levels", maxExpanded)}
				return nil
			}
		}
		if k.Value == "<<" && k.Tag == "!!merge" {
			if depth == 0 && !counted {
				p.expandAt = at(k)
			}
			merged = append(merged, p.pairsDepth(v, "a merge (<<) value", depth+1)...)
			if p.expandErr != nil {
				return nil
			}
			continue
		}
		if seen[k.Value] {
			p.errf(at(k), "key %q appears twice in %s; keep one", k.Value, what)
			continue
		}
		seen[k.Value] = true
		out = append(out, pair{k, v})
	}
	// Keys written out override merged ones, as YAML's merge key specifies.
	for _, m := range merged {
		if !seen[m.key.Value] {
			seen[m.key.Value] = true
			out = append(out, m)
		}
	}
	return out
}

func (p *parser) top(cfg *Config, doc *yaml.Node) {
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	root = deref(root)
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return
	}
	s := &topState{cfg: cfg}
	for _, kv := range p.pairs(root, "the top level") {
		if set, ok := lookup(topSettings, kv.key.Value); ok {
			set.parse(p, s, set.name, deref(kv.val))
		} else {
			p.unknown(kv.key, "top-level", names(topSettings))
		}
	}
	// Checked once every key is read, as allow_insecure_http may come after it.
	if s.apiURL != nil {
		if err := CheckAPIURL(cfg.APIURL, cfg.AllowInsecureHTTP); errors.Is(err, ErrPlainHTTP) {
			p.errf(at(s.apiURL), "api_url: %v; use https://, or set allow_insecure_http: true if you mean it", err)
		} else if err != nil {
			p.errf(at(s.apiURL), "api_url: %v", err)
		}
	}
	if s.forwards != nil {
		p.forwards(cfg, s.forwards)
	}
	if s.sprites != nil {
		p.sprites(cfg, s.sprites)
	}
	if s.socks != nil {
		if host, _, err := net.SplitHostPort(cfg.SOCKS); err == nil && !isLoopback(host) {
			switch {
			case !cfg.AllowPublic:
				p.errf(at(s.socks), "socks %q is reachable from other machines; use 127.0.0.1, or set allow_public: true and socks_users_file if you mean it", cfg.SOCKS)
			case cfg.SOCKSUsersFile == "":
				p.errf(at(s.socks), "socks %q is reachable from other machines, so clients must authenticate: set socks_users_file", cfg.SOCKS)
			}
		}
	}
	if cfg.MetricsListen != "" {
		if host, _, err := net.SplitHostPort(cfg.MetricsListen); err == nil && !isLoopback(host) && !cfg.AllowPublic {
			p.errf(Pos{1, 1}, "metrics_listen %q is not a loopback address; set allow_public: true to expose it", cfg.MetricsListen)
		}
	}
}

// ErrPlainHTTP means an API URL would carry the token in clear, over
// http:// to a host that is not loopback.
var ErrPlainHTTP = errors.New("plain http sends the token in clear")

// CheckAPIURL checks an API base URL. http:// is for the emulator, on
// loopback; anywhere else it hands the bearer token to every network hop,
// so it is ErrPlainHTTP unless allowInsecureHTTP.
func CheckAPIURL(s string, allowInsecureHTTP bool) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q must start with https:// (or http:// for a local emulator)", s)
	}
	if u.Scheme == "http" && !allowInsecureHTTP && !isLoopback(strings.ToLower(u.Hostname())) {
		return fmt.Errorf("%q: %w to %s, which is not a loopback address", s, ErrPlainHTTP, u.Hostname())
	}
	return nil
}

func (p *parser) forwards(cfg *Config, n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(at(n), "forwards must be a list; start each rule with \"- \", such as - 5432:db:5432")
		return
	}
	for _, raw := range n.Content {
		item := deref(raw)
		f := defaultForward()
		f.Pos = at(item)
		var ok bool
		if item.Kind == yaml.ScalarNode {
			ok = p.compact(&f, item)
		} else {
			ok = p.forwardMap(&f, raw) // an alias's entries count against maxExpanded
		}
		if !ok {
			continue
		}
		if f.Name == "" {
			f.Name = f.Target()
		}
		if f.Mode == Mux && !isLoopback(f.Host) {
			p.errf(f.Pos, "host %q: a mux forward reaches only loopback inside the sprite (the agent refuses other targets); use mode: direct for it", f.Host)
		}
		cfg.Forwards = append(cfg.Forwards, f)
	}
	p.crossCheck(cfg)
}

// Validate runs the checks that span forwards (unique names, no overlapping
// listen addresses, loopback unless allowed) on a config built in code.
func Validate(cfg *Config) error {
	p := &parser{file: cfg.File}
	if p.file == "" {
		p.file = "command line"
	}
	p.crossCheck(cfg)
	if len(p.errs) > 0 {
		return p.errs
	}
	return nil
}

func (p *parser) crossCheck(cfg *Config) {
	names := map[string]Pos{}
	binds := map[string]Pos{}
	for _, f := range cfg.Forwards {
		if prev, dup := names[f.Name]; dup {
			p.errf(f.Pos, "forward name %q is already used at line %d; give this one a different name:", f.Name, prev.Line)
		} else {
			names[f.Name] = f.Pos
		}
		host, port, _ := net.SplitHostPort(f.Listen)
		if !isLoopback(host) && !f.AllowPublic && !cfg.AllowPublic {
			p.errf(f.Pos, "listen %q is reachable from other machines; use 127.0.0.1 or localhost, or set allow_public: true if you mean it", f.Listen)
		}
		if port == "0" {
			continue // the system picks a free port: no overlap possible
		}
		for _, b := range bindKeys(host, port) {
			if prev, dup := binds[b]; dup {
				p.errf(f.Pos, "listen %s overlaps the forward at line %d; pick another local port", f.Listen, prev.Line)
				break
			}
		}
		for _, b := range bindKeys(host, port) {
			binds[b] = f.Pos
		}
	}
}

// bindKeys lists what a listen address occupies, so overlaps are caught:
// localhost takes both loopbacks, and a wildcard conflicts with everything.
func bindKeys(host, port string) []string {
	switch host {
	case "localhost":
		return []string{"127.0.0.1:" + port, "[::1]:" + port, "*:" + port}
	case "0.0.0.0", "::":
		return []string{"*:" + port}
	}
	return []string{net.JoinHostPort(host, port), "*:" + port}
}

func (p *parser) forwardMap(f *Forward, n *yaml.Node) bool {
	before := len(p.errs)
	s := &fwdState{f: f}
	for _, kv := range p.pairs(n, "a forward") {
		if set, ok := lookup(forwardSettings, kv.key.Value); ok {
			set.parse(p, s, set.name, deref(kv.val))
		} else {
			p.unknown(kv.key, "forward", names(forwardSettings))
		}
	}
	if !s.hasSprite {
		p.errf(f.Pos, "forward is missing sprite:; add the name of the sprite to reach, such as sprite: db")
	}
	if !s.hasPort {
		p.errf(f.Pos, "forward is missing port:; add the port inside the sprite, such as port: 5432")
	}
	if !s.hasListen && s.hasPort && f.Port > 0 {
		f.Listen = net.JoinHostPort(DefaultBind, strconv.Itoa(f.Port))
	}
	// Without port: there is no listen default either, but the port error
	// already says what to add.
	return len(p.errs) == before
}

// compact parses the ssh -L style rule [bind:]localport:sprite:port.
func (p *parser) compact(f *Forward, n *yaml.Node) bool {
	r, err := ParseRule(n.Value)
	if err != nil {
		p.errf(at(n), "%v", err)
		return false
	}
	r.Pos = f.Pos
	*f = r
	return true
}

// ParseRule parses a compact forward rule, [bind:]localport:sprite:port, as
// in ssh -L. The bind address may be an IPv6 address in brackets.
func ParseRule(s string) (Forward, error) {
	f := defaultForward()
	want := fmt.Errorf("rule %q: want [bind:]localport:sprite:port, such as 5432:db:5432 or 127.0.0.1:8080:web:3000", s)
	bind := ""
	rest := s
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return f, want
		}
		bind, rest = s[1:end], s[end+2:]
	}
	parts := strings.Split(rest, ":")
	switch {
	case bind == "" && len(parts) == 4:
		bind, parts = parts[0], parts[1:]
		if bind == "" {
			return f, fmt.Errorf("rule %q: empty bind address; write %s for loopback, or 0.0.0.0:... with allow_public: true", s, strings.TrimPrefix(s, ":"))
		}
	case len(parts) != 3:
		return f, want
	}
	if bind == "" {
		bind = DefaultBind
	}
	local, err := strconv.Atoi(parts[0])
	if err != nil || local < 0 || local > 65535 {
		return f, fmt.Errorf("rule %q: local port %q is not a number from 1 to 65535 (or 0 for any free port)", s, parts[0])
	}
	if msg := checkSprite(parts[1]); msg != "" {
		return f, fmt.Errorf("rule %q: sprite %q: %s", s, parts[1], msg)
	}
	remote, err := strconv.Atoi(parts[2])
	if err != nil || remote < 1 || remote > 65535 {
		return f, fmt.Errorf("rule %q: sprite port %q is not a number from 1 to 65535", s, parts[2])
	}
	listen, msg := normalizeListen(net.JoinHostPort(bind, strconv.Itoa(local)))
	if msg != "" {
		return f, fmt.Errorf("rule %q: %s", s, msg)
	}
	f.Listen, f.Sprite, f.Port = listen, parts[1], remote
	f.Name = f.Target()
	return f, nil
}

// normalizeListen accepts "PORT", "HOST:PORT" or "[V6]:PORT" and returns
// host:port. The host must be an IP address or localhost.
func normalizeListen(s string) (string, string) {
	if port, err := strconv.Atoi(s); err == nil {
		if port < 0 || port > 65535 {
			return "", "port must be from 1 to 65535 (or 0 for any free port)"
		}
		return net.JoinHostPort(DefaultBind, s), ""
	}
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", "want a port or host:port, such as 127.0.0.1:5432"
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", fmt.Sprintf("port %q must be a number from 1 to 65535 (or 0 for any free port)", ps)
	}
	switch {
	case host == "":
		return "", fmt.Sprintf("empty host is ambiguous; write %s for loopback, or 0.0.0.0:%s with allow_public: true", ps, ps)
	case host == "localhost":
	case net.ParseIP(host) == nil:
		return "", fmt.Sprintf("host %q must be an IP address or localhost", host)
	}
	return net.JoinHostPort(host, ps), ""
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkSprite(s string) string {
	if s == "" {
		return "the sprite name is empty"
	}
	if len(s) > 63 {
		return "longer than 63 characters"
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return "use letters, digits, '-', '_' and '.' only"
		}
	}
	return ""
}

func checkName(s string) string {
	if strings.TrimSpace(s) == "" {
		return "the name is empty; leave name: out to get sprite:port"
	}
	if len(s) > 128 {
		return "longer than 128 bytes"
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "contains a control character"
		}
	}
	return ""
}

func (p *parser) str(v *yaml.Node, key string) (string, bool) {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!str" {
		p.errf(at(v), "%s must be a string; quote it if needed", key)
		return "", false
	}
	return v.Value, true
}

func (p *parser) boolean(v *yaml.Node, key string) bool {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
		p.errf(at(v), "%s must be true or false", key)
		return false
	}
	return v.Value == "true" || v.Value == "True" || v.Value == "TRUE"
}

func (p *parser) intIn(v *yaml.Node, key string, lo, hi, def int) int {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" {
		p.errf(at(v), "%s must be a whole number from %d to %d", key, lo, hi)
		return def
	}
	n, err := strconv.ParseInt(v.Value, 0, 64)
	if err != nil || n < int64(lo) || n > int64(hi) {
		p.errf(at(v), "%s %s is out of range; want %d to %d", key, v.Value, lo, hi)
		return def
	}
	return int(n)
}

// size reads a byte count: a whole number, or one with KiB, MiB or GiB.
func (p *parser) size(v *yaml.Node, key string, lo, hi, def int) int {
	n, ok := ParseSize(v.Value)
	if v.Kind != yaml.ScalarNode || !ok {
		p.errf(at(v), "%s must be a size such as 4MiB, 512KiB or 1048576", key)
		return def
	}
	if n < lo || n > hi {
		p.errf(at(v), "%s %s is out of range; want %dKiB to %dMiB", key, v.Value, lo>>10, hi>>20)
		return def
	}
	return n
}

// ParseSize parses a byte count such as 4MiB, 512KiB, 1GiB or 65536.
func ParseSize(s string) (int, bool) {
	mult := 1
	for suffix, m := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if t, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = strings.TrimSpace(t), m
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, false
	}
	return n * mult, true
}

func (p *parser) duration(v *yaml.Node, key string, lo, hi, def time.Duration) time.Duration {
	if v.Kind != yaml.ScalarNode {
		p.errf(at(v), "%s must be a duration such as 15s or 2m", key)
		return def
	}
	d, err := time.ParseDuration(v.Value)
	if err != nil {
		hint := ""
		if v.Tag == "!!int" {
			hint = fmt.Sprintf(" (a bare number has no unit: write %ss)", v.Value)
		}
		p.errf(at(v), "%s %q is not a duration such as 15s or 2m%s", key, v.Value, hint)
		return def
	}
	if d < lo || d > hi {
		p.errf(at(v), "%s %s is out of range; want %s to %s", key, d, lo, hi)
		return def
	}
	return d
}

func (p *parser) unknown(k *yaml.Node, where string, valid []string) {
	msg := fmt.Sprintf("unknown %s key %q", where, k.Value)
	if s := closest(k.Value, valid); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	} else {
		msg += "; valid keys are " + strings.Join(valid, ", ")
	}
	p.errf(at(k), "%s", msg)
}

// closest returns the valid key within edit distance 2 of s, if any.
func closest(s string, valid []string) string {
	best, bestD := "", 3
	for _, v := range valid {
		if d := editDistance(s, v); d < bestD {
			best, bestD = v, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ExpandHome resolves a leading ~/ against the user's home directory.
func ExpandHome(path string) string {
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return path
}
