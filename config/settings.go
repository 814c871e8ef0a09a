package config

import (
	"net"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// setting is one key of the file. The parser, validate's did-you-mean and
// the test against README.md's settings table all read the two lists
// below, so a key cannot be parsed but undocumented, or documented with a
// default it does not have.
type setting[S any] struct {
	name string
	// def is the default as it would be written in the file; in
	// parentheses, what happens without the key, for keys whose default
	// is not a value (or that have none).
	def string
	doc string
	// parse reads the key's value v into s, reporting problems with p. It
	// is given k, the name, as an entry of the table cannot refer to itself.
	parse func(p *parser, s S, k string, v *yaml.Node)
}

func lookup[S any](settings []setting[S], name string) (setting[S], bool) {
	for _, s := range settings {
		if s.name == name {
			return s, true
		}
	}
	return setting[S]{}, false
}

func names[S any](settings []setting[S]) []string {
	out := make([]string, len(settings))
	for i, s := range settings {
		out[i] = s.name
	}
	return out
}

// topState is what the top level's keys write: the config, and the values
// that are checked only once every key is read.
type topState struct {
	cfg                              *Config
	apiURL, forwards, sprites, socks *yaml.Node
}

// topSettings are the top-level keys. Their order is the order the
// "valid keys are" message lists them in.
var topSettings = []setting[*topState]{
	{"api_url", DefaultAPIURL, "Sprites API; http:// only for an emulator on loopback, unless allow_insecure_http",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			if u, ok := p.str(v, k); ok {
				s.apiURL, s.cfg.APIURL = v, u
			}
		}},
	{"token_file", DefaultTokenFile, "file holding the token; $SPRITES_TOKEN wins",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			if f, ok := p.str(v, k); ok {
				s.cfg.TokenFile = f
			}
		}},
	{"ca_file", "(system roots)", "PEM file of the CAs that sign api_url's certificate, instead of the system's; $SSL_CERT_FILE also works",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			if f, ok := p.str(v, k); ok {
				path := ExpandHome(f)
				if _, err := LoadCA(path); err != nil {
					p.errf(at(v), "ca_file: %v", err)
				}
				s.cfg.CAFile = path
			}
		}},
	{"keepalive", DefaultKeepalive.String(), "WebSocket ping interval on live links",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.Keepalive = p.duration(v, k, 100*time.Millisecond, time.Hour, s.cfg.Keepalive)
		}},
	{"wake_timeout", DefaultWakeTimeout.String(), "how long a connection may wait for its sprite to wake",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.WakeTimeout = p.duration(v, k, 100*time.Millisecond, time.Hour, s.cfg.WakeTimeout)
		}},
	{"shutdown_grace", DefaultShutdownGrace.String(), "how long open connections get on stop, or when a reload removes their forward",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.ShutdownGrace = p.duration(v, k, 0, time.Hour, s.cfg.ShutdownGrace)
		}},
	{"half_close_timeout", DefaultHalfCloseTimeout.String(), "how long a sprite may stay silent after the client closes its side",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.HalfCloseTimeout = p.duration(v, k, 100*time.Millisecond, 24*time.Hour, s.cfg.HalfCloseTimeout)
		}},
	{"max_message", strconv.Itoa(DefaultMaxMessage), "largest WebSocket message sent to a sprite known to accept it",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.MaxMessage = p.intIn(v, k, 512, 16<<20, s.cfg.MaxMessage)
		}},
	{"warm_links", strconv.Itoa(DefaultWarmLinks), "direct: spare links kept upgraded per sprite while it is in use; 0 turns them off",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.WarmLinks = p.intIn(v, k, 0, 16, s.cfg.WarmLinks)
		}},
	{"warm_linger", DefaultWarmLinger.String(), "direct: how long spare links outlive a sprite's last connection",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.WarmLinger = p.duration(v, k, 0, 10*time.Minute, s.cfg.WarmLinger)
		}},
	{"metrics_listen", "(off)", "serve Prometheus metrics on this host:port",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			if addr, ok := p.str(v, k); ok {
				if _, _, err := net.SplitHostPort(addr); err != nil {
					p.errf(at(v), "metrics_listen: want host:port, such as 127.0.0.1:9464")
				}
				s.cfg.MetricsListen = addr
			}
		}},
	{"allow_public", "false", "allow non-loopback listen addresses for every forward",
		func(p *parser, s *topState, k string, v *yaml.Node) { s.cfg.AllowPublic = p.boolean(v, k) }},
	{"allow_insecure_http", "false", "allow an http:// api_url that is not loopback",
		func(p *parser, s *topState, k string, v *yaml.Node) { s.cfg.AllowInsecureHTTP = p.boolean(v, k) }},
	{"agent_port", strconv.Itoa(DefaultAgentPort), "mux: the agent's loopback port inside the sprite",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.AgentPort = p.intIn(v, k, 1, 65535, s.cfg.AgentPort)
		}},
	{"agent_binary", "(see Mux mode)", "mux: the linux agent to upload; {arch} becomes amd64 or arm64",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			if f, ok := p.str(v, k); ok {
				s.cfg.AgentBinary = ExpandHome(f)
			}
		}},
	{"agent_dir", DefaultAgentDir, "mux: where the agent and its files live inside the sprite",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			if dir, ok := p.str(v, k); ok {
				if !strings.HasPrefix(dir, "/") || strings.Contains(dir, "..") {
					p.errf(at(v), "agent_dir %q: want an absolute path inside the sprite, such as /tmp/spritefwd", dir)
				}
				s.cfg.AgentDir = strings.TrimSuffix(dir, "/")
			}
		}},
	{"mux_idle_timeout", DefaultMuxIdleTimeout.String(), "mux: close the agent session this long after its last stream",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.MuxIdleTimeout = p.duration(v, k, 0, 24*time.Hour, s.cfg.MuxIdleTimeout)
		}},
	{"resume_window", DefaultResumeWindow.String(), "mux: how long a stream waits for a dropped link to come back",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.ResumeWindow = p.duration(v, k, 0, 24*time.Hour, s.cfg.ResumeWindow)
		}},
	{"resume_buffer", strconv.Itoa(DefaultResumeBuffer), "mux: the most one stream's window grows to, per direction: its bytes in flight, kept for replay",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.ResumeBuffer = p.size(v, k, 64<<10, 1<<30, s.cfg.ResumeBuffer)
		}},
	{"mux_memory", strconv.Itoa(DefaultMuxMemory), "mux: what all the daemon's stream windows may hold together beyond 256 KiB each (bytes in flight, kept for replay); bounds the daemon's memory under bulk transfers",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			s.cfg.MuxMemory = p.size(v, k, 0, 64<<30, s.cfg.MuxMemory)
		}},
	{"forwards", "(none)", "the forward rules, each compact or a mapping of the forward keys",
		func(p *parser, s *topState, k string, v *yaml.Node) { s.forwards = v }},
	{"socks", "(off)", "SOCKS5 and HTTP CONNECT proxy to every sprite on this host:port: the destination's name is the sprite, its port the sprite's",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			if addr, ok := p.str(v, k); ok {
				if host, _, err := net.SplitHostPort(addr); err != nil || net.ParseIP(host) == nil && host != "localhost" {
					p.errf(at(v), "socks: want an IP address and port, such as 127.0.0.1:1080")
				}
				s.socks, s.cfg.SOCKS = v, addr
			}
		}},
	{"socks_suffix", DefaultSOCKSSuffix, "stripped from SOCKS destination names: web.sprite:3000 is sprite web, port 3000",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			if suffix, ok := p.str(v, k); ok {
				if suffix != "" && (!strings.HasPrefix(suffix, ".") || strings.ContainsAny(suffix, " /:")) {
					p.errf(at(v), "socks_suffix %q: want a domain suffix such as .sprite, or \"\" for none", suffix)
				}
				s.cfg.SOCKSSuffix = suffix
			}
		}},
	{"socks_users_file", "(none)", "file of user:password lines (mode 0600); SOCKS and HTTP CONNECT clients must then give one; required for a non-loopback socks",
		func(p *parser, s *topState, k string, v *yaml.Node) {
			if f, ok := p.str(v, k); ok {
				s.cfg.SOCKSUsersFile = ExpandHome(f)
			}
		}},
	{"sprites", "(none)", "per-sprite settings for stdio and SOCKS connections that no forward matches, and auto_forward, such as sprites: {db: {mode: mux}}",
		func(p *parser, s *topState, k string, v *yaml.Node) { s.sprites = v }},
}

// fwdState is one forward being read, and whether the keys checked once
// all are read were given: sprite and port are required, and listen's
// default comes from port.
type fwdState struct {
	f                             *Forward
	hasSprite, hasPort, hasListen bool
	auto                          AutoForward // under sprites: only
}

// forwardSettings are the keys of a forward written as a mapping.
var forwardSettings = []setting[*fwdState]{
	{"name", "(`sprite:port`)", "shown in logs and status",
		func(p *parser, s *fwdState, k string, v *yaml.Node) {
			if name, ok := p.str(v, k); ok {
				if msg := checkName(name); msg != "" {
					p.errf(at(v), "name: %s", msg)
				}
				s.f.Name = name
			}
		}},
	{"listen", "(`" + DefaultBind + ":<port>`)", "local address; localhost binds both loopbacks",
		func(p *parser, s *fwdState, k string, v *yaml.Node) {
			s.hasListen = true
			if v.Kind != yaml.ScalarNode || (v.Tag != "!!str" && v.Tag != "!!int") {
				p.errf(at(v), "listen must be a port or host:port, such as 127.0.0.1:5432")
				return
			}
			if l, msg := normalizeListen(v.Value); msg != "" {
				p.errf(at(v), "listen %q: %s", v.Value, msg)
			} else {
				s.f.Listen = l
			}
		}},
	{"sprite", "(required)", "the sprite to reach",
		func(p *parser, s *fwdState, k string, v *yaml.Node) {
			s.hasSprite = true
			if name, ok := p.str(v, k); ok {
				if msg := checkSprite(name); msg != "" {
					p.errf(at(v), "sprite %q: %s", name, msg)
				}
				s.f.Sprite = name
			}
		}},
	{"port", "(required)", "the port inside the sprite",
		func(p *parser, s *fwdState, k string, v *yaml.Node) {
			s.hasPort = true
			s.f.Port = p.intIn(v, k, 1, 65535, 0)
		}},
	{"host", DefaultHost, "target host inside the sprite",
		func(p *parser, s *fwdState, k string, v *yaml.Node) {
			if host, ok := p.str(v, k); ok {
				if host == "" || strings.ContainsAny(host, " /\t") {
					p.errf(at(v), "host %q: want a host name or IP inside the sprite, such as localhost", host)
				}
				s.f.Host = host
			}
		}},
	{"keep_awake", string(DefaultKeepAwake), "when pings keep the sprite awake: while_connected, always or never",
		func(p *parser, s *fwdState, k string, v *yaml.Node) {
			if ka, ok := p.str(v, k); ok {
				switch KeepAwake(ka) {
				case WhileConnected, Always, Never:
					s.f.KeepAwake = KeepAwake(ka)
				default:
					p.errf(at(v), "keep_awake %q: want while_connected, always or never", ka)
				}
			}
		}},
	{"mode", string(DefaultMode), "direct (a WebSocket per connection) or mux (streams to an agent)",
		func(p *parser, s *fwdState, k string, v *yaml.Node) {
			if m, ok := p.str(v, k); ok {
				if Mode(m) != Direct && Mode(m) != Mux {
					p.errf(at(v), "mode %q: want direct (a WebSocket per connection) or mux (streams over one link to an agent in the sprite)", m)
				}
				s.f.Mode = Mode(m)
			}
		}},
	{"allow_public", "false", "allow a non-loopback listen for this forward",
		func(p *parser, s *fwdState, k string, v *yaml.Node) { s.f.AllowPublic = p.boolean(v, k) }},
	{"max_connections", strconv.Itoa(DefaultMaxConnections), "open plus lingering connections",
		func(p *parser, s *fwdState, k string, v *yaml.Node) {
			s.f.MaxConnections = p.intIn(v, k, 1, 1<<20, s.f.MaxConnections)
		}},
}
