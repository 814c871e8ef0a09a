package config

import (
	"go.yaml.in/yaml/v3"
)

// SpriteSettings are one sprite's settings for the fronts that have no
// forward of their own (spritefwd stdio, the SOCKS port), from the
// config's sprites: section, such as sprites: {db: {mode: mux}}. A forward
// to the same sprite and port wins over them.
type SpriteSettings struct {
	Host      string
	KeepAwake KeepAwake
	Mode      Mode
	Auto      AutoForward
	Pos       Pos
}

// Apply sets the rule's host, keep_awake and mode to the sprite's.
func (s SpriteSettings) Apply(f Forward) Forward {
	f.Host, f.KeepAwake, f.Mode = s.Host, s.KeepAwake, s.Mode
	return f
}

// spriteSettings are the keys of a sprite under sprites:, parsed as a
// forward's are.
var spriteSettings = append(pick(forwardSettings, "host", "keep_awake", "mode"), autoSettings...)

func pick(settings []setting[*fwdState], keys ...string) []setting[*fwdState] {
	var out []setting[*fwdState]
	for _, k := range keys {
		s, _ := lookup(settings, k)
		out = append(out, s)
	}
	return out
}

// sprites parses the sprites: section: a mapping from sprite name to a
// mapping of spriteSettings.
func (p *parser) sprites(cfg *Config, n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.errf(at(n), "sprites must be a mapping from sprite name to its settings, such as sprites: {db: {mode: mux}}")
		return
	}
	cfg.Sprites = map[string]SpriteSettings{}
	for _, kv := range p.pairs(n, "sprites") {
		name := kv.key.Value
		if msg := checkSprite(name); msg != "" {
			p.errf(at(kv.key), "sprites: %q: %s", name, msg)
			continue
		}
		f := defaultForward()
		f.Pos = at(kv.key)
		s := &fwdState{f: &f, auto: AutoForward{Listen: DefaultBind}}
		var pairs []pair
		if v := deref(kv.val); v.Kind != yaml.ScalarNode || v.Tag != "!!null" { // "box:" alone means the defaults
			pairs = p.pairs(kv.val, "sprites: "+name)
		}
		for _, kv := range pairs {
			if set, ok := lookup(spriteSettings, kv.key.Value); ok {
				set.parse(p, s, set.name, deref(kv.val))
			} else {
				p.unknown(kv.key, "sprite", names(spriteSettings))
			}
		}
		if f.Mode == Mux && !isLoopback(f.Host) {
			p.errf(f.Pos, "sprites: %s: host %q: mux mode reaches only loopback inside the sprite; use mode: direct for it", name, f.Host)
		}
		if !s.auto.On && (len(s.auto.Only) > 0 || len(s.auto.Exclude) > 0) {
			p.errf(f.Pos, "sprites: %s: only and exclude narrow auto_forward; add auto_forward: true", name)
		}
		if s.auto.On && !isLoopback(s.auto.Listen) && !cfg.AllowPublic {
			p.errf(f.Pos, "sprites: %s: auto_listen %s is not loopback; set allow_public: true if every sprite port should be reachable from the network", name, s.auto.Listen)
		}
		cfg.Sprites[name] = SpriteSettings{Host: f.Host, KeepAwake: f.KeepAwake, Mode: f.Mode, Auto: s.auto, Pos: f.Pos}
	}
}
