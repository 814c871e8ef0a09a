package agent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spritefwd/spritefwd/mux"
	"github.com/spritefwd/spritefwd/procnet"
)

func writeTable(t *testing.T, dir, name string, ls ...procnet.Listener) {
	t.Helper()
	var b strings.Builder
	b.WriteString(procnet.Header + "\n")
	for i, l := range ls {
		b.WriteString(procnet.FormatLine(i, l) + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The agent reports its sprite's ports at once, then each change once, in
// virtual time.
func TestWatchPorts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		lo, any6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::")
		writeTable(t, dir, "tcp", procnet.Listener{Addr: lo, Port: 3000})
		writeTable(t, dir, "tcp6")
		a, err := New(Options{Secret: mux.NewSecret(), ProcNet: dir})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var got []mux.PortList
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.watchPorts(ctx, func(l mux.PortList) { got = append(got, l) })
		}()
		synctest.Wait()
		if len(got) != 1 || len(got[0].Ports) != 1 || got[0].Ports[0].Port != 3000 || got[0].Ports[0].Addr != "127.0.0.1" {
			t.Fatalf("first report %+v, want port 3000 on 127.0.0.1", got)
		}
		time.Sleep(5 * portPoll)
		if len(got) != 1 {
			t.Fatalf("no change, yet %d reports", len(got))
		}
		writeTable(t, dir, "tcp6", procnet.Listener{Addr: any6, Port: 5432})
		time.Sleep(portPoll)
		synctest.Wait()
		if len(got) != 2 || len(got[1].Ports) != 2 || got[1].Ports[1].Port != 5432 || got[1].Ports[1].Addr != "::" {
			t.Fatalf("after a server started: %+v", got)
		}
		writeTable(t, dir, "tcp")
		time.Sleep(portPoll)
		synctest.Wait()
		if len(got) != 3 || len(got[2].Ports) != 1 || got[2].Ports[0].Port != 5432 {
			t.Fatalf("after a server stopped: %+v", got)
		}
		cancel()
		<-done
	})
}

func TestProcNet(t *testing.T) {
	if got := procNet(func(string) string { return "" }); got != DefaultProcNet {
		t.Errorf("without the variable: %q", got)
	}
	if got := procNet(func(k string) string { return "/x/" + k }); got != "/x/SPRITEFWD_PROC_NET" {
		t.Errorf("with it: %q", got)
	}
}
