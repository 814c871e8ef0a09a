package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// AutoForward is a sprite's auto_forward: a local listener for every port
// the sprite listens on, narrowed by Only and Exclude.
type AutoForward struct {
	On bool
	// Only, if not empty, lists the ports that may be forwarded; Exclude
	// the ports that may not. Ports below 1024 and the agent's port are
	// left out unless Only names them.
	Only, Exclude PortSet
	// Listen is the local host the listeners bind: localhost (both
	// loopbacks) unless allow_public lets it be another.
	Listen string
}

// PortRange is lo-hi, both included; one port has lo == hi.
type PortRange struct{ Lo, Hi int }

// PortSet is a list of ports and ranges, such as 3000-3999 and 9229.
type PortSet []PortRange

// Contains reports whether p is in the set.
func (s PortSet) Contains(p int) bool {
	for _, r := range s {
		if p >= r.Lo && p <= r.Hi {
			return true
		}
	}
	return false
}

func (s PortSet) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = strconv.Itoa(r.Lo)
		if r.Hi != r.Lo {
			parts[i] += "-" + strconv.Itoa(r.Hi)
		}
	}
	return strings.Join(parts, ",")
}

// ParsePortSet reads "3000-3999,9229" (commas or spaces between).
func ParsePortSet(text string) (PortSet, error) {
	var out PortSet
	for _, f := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' }) {
		r, err := parsePortRange(f)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no ports in %q; want ports and ranges such as 3000-3999,9229", text)
	}
	return out, nil
}

func parsePortRange(f string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(f, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.Atoi(lo)
	h, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || l < 1 || h > 65535 || l > h {
		return PortRange{}, fmt.Errorf("%q: want a port 1-65535 or a range such as 3000-3999", f)
	}
	return PortRange{l, h}, nil
}

// portSet reads a list of ports and ranges: a sequence ([3000-3999, 9229])
// or one string ("3000-3999,9229").
func (p *parser) portSet(v *yaml.Node, key string) PortSet {
	var items []*yaml.Node
	switch v.Kind {
	case yaml.SequenceNode:
		items = v.Content
	case yaml.ScalarNode:
		items = []*yaml.Node{v}
	default:
		p.errf(at(v), "%s: want a list of ports and ranges, such as [3000-3999, 9229]", key)
		return nil
	}
	var out PortSet
	for _, it := range items {
		if it.Kind != yaml.ScalarNode {
			p.errf(at(it), "%s: want a list of ports and ranges, such as [3000-3999, 9229]", key)
			continue
		}
		s, err := ParsePortSet(it.Value)
		if err != nil {
			p.errf(at(it), "%s: %v", key, err)
			continue
		}
		out = append(out, s...)
	}
	return out
}

// autoSettings are a sprite's auto-forward keys under sprites:.
var autoSettings = []setting[*fwdState]{
	{"auto_forward", "false", "a local listener for every TCP port the sprite listens on (see Auto-forward)",
		func(p *parser, s *fwdState, k string, v *yaml.Node) { s.auto.On = p.boolean(v, k) }},
	{"only", "(every port)", "auto_forward: only these ports and ranges, such as [3000-3999, 9229]",
		func(p *parser, s *fwdState, k string, v *yaml.Node) { s.auto.Only = p.portSet(v, k) }},
	{"exclude", "(none)", "auto_forward: never these ports and ranges",
		func(p *parser, s *fwdState, k string, v *yaml.Node) { s.auto.Exclude = p.portSet(v, k) }},
	{"auto_listen", DefaultBind, "auto_forward: the local host its listeners bind; another than loopback needs allow_public",
		func(p *parser, s *fwdState, k string, v *yaml.Node) {
			if h, ok := p.str(v, k); ok {
				if _, msg := normalizeListen(net.JoinHostPort(h, "1")); msg != "" {
					p.errf(at(v), "auto_listen %q: %s", h, msg)
				} else {
					s.auto.Listen = h
				}
			}
		}},
}
