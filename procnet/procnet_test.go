package procnet

import (
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Lines as a Linux 6.x kernel prints them.
const sample = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 31337 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2B4 01 00000000:00000000 00:00000000 00000000  1000        0 0 1 0000000000000000 20 4 30 10 -1
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 555 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 556 1 0000000000000000 100 0 0 10 0
garbage
`

func TestParse(t *testing.T) {
	ls, bad := Parse([]byte(sample))
	if bad != 1 {
		t.Errorf("bad = %d, want 1 (the garbage line)", bad)
	}
	want := []Listener{
		{netip.MustParseAddr("127.0.0.1"), 8080, 31337},
		{netip.MustParseAddr("0.0.0.0"), 22, 1234},
		{netip.MustParseAddr("::1"), 3000, 555},
		{netip.MustParseAddr("::"), 8080, 556},
	}
	if len(ls) != len(want) {
		t.Fatalf("got %v, want %v", ls, want)
	}
	for i := range want {
		if ls[i] != want[i] {
			t.Errorf("listener %d = %v, want %v", i, ls[i], want[i])
		}
	}
	ports := Ports(ls)
	if len(ports) != 3 || ports[0].Port != 22 || ports[1].Port != 3000 || ports[2].Port != 8080 || !ports[2].Addr.IsUnspecified() {
		t.Errorf("Ports = %v, want 22, 3000 and 8080 on ::", ports)
	}
}

func TestParseRejects(t *testing.T) {
	for _, line := range []string{
		"   0: 0100007F:1F90 00000000:0000 0A",                     // short
		"   0: 0100007:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1 1",    // odd address
		"   0: 0100007F:0000 00000000:0000 0A 0:0 0:0 0 0 0 1 1",   // port 0
		"   0: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 x 1",   // inode
		"   0: 0100007G:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1 1",   // hex
		"   0 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1 1",    // sl
		"   0: 0100007F:1F9000 00000000:0000 0A 0:0 0:0 0 0 0 1 1", // port digits
	} {
		if ls, bad := Parse([]byte(line)); len(ls) != 0 || bad != 1 {
			t.Errorf("%q: got %v, bad %d; want it refused", line, ls, bad)
		}
	}
}

func TestParseBounded(t *testing.T) {
	var b strings.Builder
	for i := range MaxListeners + 10 {
		b.WriteString(FormatLine(i, Listener{netip.MustParseAddr("127.0.0.1"), 1 + i%65535, uint64(i)}) + "\n")
	}
	if ls, _ := Parse([]byte(b.String())); len(ls) != MaxListeners {
		t.Errorf("got %d listeners, want the bound %d", len(ls), MaxListeners)
	}
}

// The machine's own tables parse without a bad line.
func TestParseLive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc")
	}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if _, bad := Parse(b); bad != 0 {
			t.Errorf("%s: %d bad lines", f, bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte(FormatLine(0, Listener{netip.MustParseAddr("::ffff:1.2.3.4"), 5, 6})))
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, _ := Parse(b)
		for _, l := range ls {
			if l.Port < 1 || l.Port > 65535 || !l.Addr.IsValid() {
				t.Fatalf("bad listener %v", l)
			}
			// What Parse returns, FormatLine writes back the same.
			again, bad := Parse([]byte(FormatLine(1, l)))
			if bad != 0 || len(again) != 1 || again[0] != l {
				t.Fatalf("round trip of %v: %v (bad %d)", l, again, bad)
			}
		}
	})
}
