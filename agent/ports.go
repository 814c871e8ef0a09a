package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/procnet"
)

// portPoll is how often the agent reads its sprite's TCP tables while a
// daemon watches them: two small reads of kernel memory, nothing leaves
// the sprite unless the list changed.
const portPoll = 500 * time.Millisecond

// DefaultProcNet is where a sprite's TCP tables are.
const DefaultProcNet = "/proc/net"

// watchPorts reports the sprite's listening ports now and at every change,
// until ctx ends. Process names are looked up once per socket.
func (a *Agent) watchPorts(ctx context.Context, changed func(mux.PortList)) {
	dir := a.opts.ProcNet
	if dir == "" {
		dir = DefaultProcNet
	}
	owners := map[uint64]procnet.Owner{}
	var last []mux.ListeningPort
	first := true
	t := time.NewTicker(portPoll)
	defer t.Stop()
	for {
		var text []byte
		for _, f := range []string{"tcp", "tcp6"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err == nil {
				text = append(text, b...)
			}
		}
		ls := procnet.Ports(mustParse(text))
		var unknown map[uint64]bool
		for _, l := range ls {
			if _, ok := owners[l.Inode]; !ok && l.Inode != 0 {
				if unknown == nil {
					unknown = map[uint64]bool{}
				}
				unknown[l.Inode] = true
			}
		}
		if unknown != nil {
			for ino, o := range procnet.Owners("/proc", unknown) {
				owners[ino] = o
			}
			for ino := range unknown {
				if _, ok := owners[ino]; !ok {
					owners[ino] = procnet.Owner{} // not ours to see; do not look again
				}
			}
		}
		now := make([]mux.ListeningPort, 0, len(ls))
		live := map[uint64]bool{}
		for _, l := range ls {
			o := owners[l.Inode]
			live[l.Inode] = true
			now = append(now, mux.ListeningPort{Port: l.Port, Addr: l.Addr.String(), PID: o.PID, Name: o.Name})
		}
		for ino := range owners {
			if !live[ino] {
				delete(owners, ino)
			}
		}
		if first || !slices.Equal(now, last) {
			changed(mux.PortList{Ports: now})
			last, first = now, false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func mustParse(text []byte) []procnet.Listener {
	ls, _ := procnet.Parse(text)
	return ls
}
