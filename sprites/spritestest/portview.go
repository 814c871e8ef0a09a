package spritestest

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/spritefwd/spritefwd/procnet"
)

// ProcNetEnv names the directory that holds a sprite's own tcp and tcp6
// tables, in the environment of every command the emulator runs. A real
// sprite is a machine of its own, and its /proc/net/tcp lists only its own
// sockets; the emulator's commands share this machine's network, whose
// tables list every test's sockets. So the emulator writes each sprite's
// tables to a file, and a command that reads ${SPRITEFWD_PROC_NET:-/proc/net}
// sees what it would see in a sprite.
const ProcNetEnv = "SPRITEFWD_PROC_NET"

// procNetDir is where, inside a sprite's directory, its tables live: the
// same path a command in a real sprite reads them from.
const procNetDir = "proc/net"

// portViewEvery is how often the emulator looks for sockets that a
// sprite's commands began or stopped listening on, and rewrites its
// tables. A real kernel's are current at every read; this is the lag a
// test sees on top of the reader's own. Each look walks every open file
// of every command of every running sprite, which an agent carrying 200
// streams makes costly, so it is not done more often; Map, Unmap and a
// command's start rewrite the tables at once.
const portViewEvery = time.Second

// listeningPorts lists the ports that a process, or any of its
// descendants, listens on.
func listeningPorts(pid int) map[int]bool {
	out := map[int]bool{}
	for _, l := range listeningSockets(pid) {
		out[l.Port] = true
	}
	return out
}

// Unmap removes a port that Map routed: the sprite's server stopped.
func (s *Server) Unmap(name string, port int) {
	s.mu.Lock()
	sp := s.sprites[name]
	if sp != nil {
		delete(sp.ports, port)
	}
	s.mu.Unlock()
	s.refreshTables(sp)
}

// refreshTables rewrites a sprite's tables now, if it has a directory and
// runs: a sleeping sprite's stay as they were.
func (s *Server) refreshTables(sp *sprite) {
	if sp == nil {
		return
	}
	s.mu.Lock()
	root, running := sp.root, sp.state == "running"
	s.mu.Unlock()
	if root != "" && running {
		v4, v6 := renderTables(s.socketsOf(sp))
		_ = writeTables(root, v4, v6)
	}
}

// Listening reports the ports the sprite listens on now: those Map
// routes and those its commands listen on. It does not count as activity.
func (s *Server) Listening(name string) []int {
	s.mu.Lock()
	sp := s.sprites[name]
	s.mu.Unlock()
	if sp == nil {
		return nil
	}
	var out []int
	for _, l := range procnet.Ports(s.socketsOf(sp)) {
		out = append(out, l.Port)
	}
	return out
}

// socketsOf lists a sprite's listening sockets: Map's ports on loopback
// with no inode (no process of the sprite's holds them), then its
// commands' real sockets.
func (s *Server) socketsOf(sp *sprite) []procnet.Listener {
	s.mu.Lock()
	var out []procnet.Listener
	for port := range sp.ports {
		out = append(out, procnet.Listener{Addr: netip.AddrFrom4([4]byte{127, 0, 0, 1}), Port: port})
	}
	var pids []int
	for sess := range sp.sessions {
		pids = append(pids, sess.cmd.Process.Pid)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	if len(pids) > 0 {
		out = append(out, listeningSocketsOf(pids)...)
	}
	return out
}

// portViews keeps each running sprite's tables current. A sleeping
// sprite's stay as they were: its processes are frozen.
func (s *Server) portViews() {
	last := map[string][]byte{}
	t := time.NewTicker(portViewEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		var running []*sprite
		for _, sp := range s.sprites {
			// A sprite with neither commands nor mapped ports has
			// nothing to list, and no command to read it.
			if sp.state == "running" && sp.root != "" && len(sp.sessions) > 0 {
				running = append(running, sp)
			}
		}
		s.mu.Unlock()
		for _, sp := range running {
			v4, v6 := renderTables(s.socketsOf(sp))
			if bytes.Equal(last[sp.name+"4"], v4) && bytes.Equal(last[sp.name+"6"], v6) {
				continue
			}
			if writeTables(sp.root, v4, v6) == nil {
				last[sp.name+"4"], last[sp.name+"6"] = v4, v6
			}
		}
	}
}

func renderTables(ls []procnet.Listener) (v4, v6 []byte) {
	var b4, b6 bytes.Buffer
	b4.WriteString(procnet.Header + "\n")
	b6.WriteString(procnet.Header + "\n")
	n4, n6 := 0, 0
	for _, l := range ls {
		if l.Addr.Is4() {
			b4.WriteString(procnet.FormatLine(n4, l) + "\n")
			n4++
		} else {
			b6.WriteString(procnet.FormatLine(n6, l) + "\n")
			n6++
		}
	}
	return b4.Bytes(), b6.Bytes()
}

// writeTables replaces the tables by rename, so a reader never sees half
// of one.
func writeTables(root string, v4, v6 []byte) error {
	dir := filepath.Join(root, procNetDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, b := range map[string][]byte{"tcp": v4, "tcp6": v6} {
		// A temporary file of its own: Map and the periodic look may
		// write at once.
		tmp, err := os.CreateTemp(dir, "."+name+"-*")
		if err != nil {
			return err
		}
		_, err = tmp.Write(b)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Chmod(tmp.Name(), 0o644)
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(dir, name))
		}
		if err != nil {
			os.Remove(tmp.Name())
			return err
		}
	}
	return nil
}
