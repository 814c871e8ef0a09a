// Package procnet reads Linux's /proc/net/tcp and /proc/net/tcp6 tables:
// which TCP ports listen, on which addresses, through which socket inodes.
// The in-sprite agent reads them to see what its sprite serves, and the
// daemon parses the same text when a short exec prints them (direct mode).
package procnet

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
)

// Listener is one listening socket.
type Listener struct {
	Addr  netip.Addr
	Port  int
	Inode uint64
}

// stateListen is TCP_LISTEN as the kernel prints it.
const stateListen = "0A"

// MaxListeners bounds what Parse returns: a sprite that listens on more
// ports than this is reported by the first MaxListeners lines only.
const MaxListeners = 8192

// Parse returns the listening sockets in the text of one or more tables
// (tcp and tcp6 printed one after the other are fine: header lines are
// skipped). bad counts lines that are neither a header nor a socket; a
// table from another kernel may add columns but must keep the first ten.
// Addresses are decoded as a little-endian machine prints them, which
// covers amd64 and arm64, the two architectures sprites run on.
func Parse(text []byte) (ls []Listener, bad int) {
	for len(text) > 0 {
		var line []byte
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			line, text = text, nil
		}
		fs := bytes.Fields(line)
		if len(fs) == 0 || string(fs[0]) == "sl" {
			continue
		}
		l, listening, ok := parseLine(fs)
		switch {
		case !ok:
			bad++
		case listening && len(ls) < MaxListeners:
			ls = append(ls, l)
		}
	}
	return ls, bad
}

// parseLine reads "sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...".
func parseLine(fs [][]byte) (l Listener, listening, ok bool) {
	if len(fs) < 10 || len(fs[0]) < 2 || fs[0][len(fs[0])-1] != ':' {
		return Listener{}, false, false
	}
	addr, port, ok := parseAddr(fs[1])
	if !ok {
		return Listener{}, false, false
	}
	if len(fs[3]) != 2 {
		return Listener{}, false, false
	}
	inode, err := strconv.ParseUint(string(fs[9]), 10, 64)
	if err != nil {
		return Listener{}, false, false
	}
	return Listener{Addr: addr, Port: port, Inode: inode}, string(fs[3]) == stateListen, true
}

// parseAddr reads "0100007F:0BB8" (IPv4) or 32 hex digits and a port (IPv6).
func parseAddr(b []byte) (netip.Addr, int, bool) {
	i := bytes.IndexByte(b, ':')
	if i < 0 || len(b)-i-1 != 4 {
		return netip.Addr{}, 0, false
	}
	p, err := strconv.ParseUint(string(b[i+1:]), 16, 16)
	if err != nil || p == 0 {
		return netip.Addr{}, 0, false
	}
	raw := make([]byte, i/2)
	if i != 8 && i != 32 {
		return netip.Addr{}, 0, false
	}
	if _, err := hex.Decode(raw, b[:i]); err != nil {
		return netip.Addr{}, 0, false
	}
	// Each 32-bit word is printed as the machine holds it.
	for w := 0; w < len(raw); w += 4 {
		binary.BigEndian.PutUint32(raw[w:], binary.LittleEndian.Uint32(raw[w:]))
	}
	var a netip.Addr
	if len(raw) == 4 {
		a = netip.AddrFrom4([4]byte(raw))
	} else {
		a = netip.AddrFrom16([16]byte(raw))
	}
	return a, int(p), true
}

// FormatLine renders a listening socket as the kernel prints it, row n.
// The emulator writes its sprites' tables with it.
func FormatLine(n int, l Listener) string {
	raw := l.Addr.AsSlice()
	out := make([]byte, len(raw))
	copy(out, raw)
	for w := 0; w+4 <= len(out); w += 4 {
		binary.LittleEndian.PutUint32(out[w:], binary.BigEndian.Uint32(out[w:]))
	}
	zero := "00000000"
	if len(raw) == 16 {
		zero = "00000000000000000000000000000000"
	}
	return fmt.Sprintf("%4d: %X:%04X %s:0000 %s 00000000:00000000 00:00000000 00000000  1000        0 %d 1 0000000000000000 100 0 0 10 0",
		n, out, l.Port, zero, stateListen, l.Inode)
}

// Header is the first line of a table.
const Header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"

// Ports returns the distinct listening ports, sorted, with for each the
// listener that reaches most: a wildcard address over a specific one.
func Ports(ls []Listener) []Listener {
	best := map[int]Listener{}
	for _, l := range ls {
		b, ok := best[l.Port]
		if !ok || (l.Addr.IsUnspecified() && !b.Addr.IsUnspecified()) || (b.Inode == 0 && l.Inode != 0 && l.Addr.IsUnspecified() == b.Addr.IsUnspecified()) {
			best[l.Port] = l
		}
	}
	out := make([]Listener, 0, len(best))
	for _, l := range best {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out
}
