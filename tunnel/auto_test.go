package tunnel

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/mux"
)

// fakeNet hands out listeners that accept nothing, so that a synctest
// bubble holds them; taken addresses fail as a port in use does.
type fakeNet struct {
	mu    sync.Mutex
	taken map[string]bool
	bound map[string]bool
	next  int
}

func newFakeNet() *fakeNet {
	return &fakeNet{taken: map[string]bool{}, bound: map[string]bool{}, next: 40000}
}

func (n *fakeNet) listen(_ context.Context, _, addr string) (net.Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	host, port, _ := net.SplitHostPort(addr)
	if port == "0" {
		n.next++
		addr = net.JoinHostPort(host, strconv.Itoa(n.next))
	}
	if n.taken[addr] || n.bound[addr] {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	}
	n.bound[addr] = true
	tcp, _ := net.ResolveTCPAddr("tcp", addr)
	return &fakeListener{n: n, addr: tcp, closed: make(chan struct{})}, nil
}

func (n *fakeNet) isBound(addr string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bound[addr]
}

type fakeListener struct {
	n      *fakeNet
	addr   *net.TCPAddr
	once   sync.Once
	closed chan struct{}
}

func (l *fakeListener) Accept() (net.Conn, error) {
	<-l.closed
	return nil, net.ErrClosed
}

func (l *fakeListener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.n.mu.Lock()
		delete(l.n.bound, l.addr.String())
		l.n.mu.Unlock()
	})
	return nil
}

func (l *fakeListener) Addr() net.Addr { return l.addr }

func autoSettings(a config.AutoForward) config.SpriteSettings {
	if a.Listen == "" {
		a.Listen = "127.0.0.1"
	}
	a.On = true
	return config.SpriteSettings{Host: "localhost", KeepAwake: config.WhileConnected, Mode: config.Direct, Auto: a}
}

func testAuto(t *testing.T, fn *fakeNet, dir string, a config.AutoForward) (*Daemon, *autoSprite) {
	d := New(Options{Log: zerolog.New(zerolog.NewTestWriter(t)), Listen: fn.listen, StateDir: dir})
	return d, newAutoSprite(d, "dev", autoSettings(a), 7022, map[int]bool{5432: true})
}

func ports(ps ...int) mux.PortList {
	var l mux.PortList
	for _, p := range ps {
		l.Ports = append(l.Ports, mux.ListeningPort{Port: p, Addr: "127.0.0.1", Name: "srv" + strconv.Itoa(p)})
	}
	return l
}

func (a *autoSprite) listening() map[int]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[int]int{}
	for _, p := range a.ports {
		if p.fwd != nil {
			out[p.port] = p.local
		}
	}
	return out
}

func same(a, b map[int]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Which ports get a listener: 1024 and up, not the agent's, not one a
// forward covers, not excluded; only: lists what it wants, low ports too.
func TestAutoFilter(t *testing.T) {
	for _, tt := range []struct {
		name string
		auto config.AutoForward
		want map[int]int
	}{
		{"defaults", config.AutoForward{}, map[int]int{3000: 3000, 9229: 9229}},
		{"exclude", config.AutoForward{Exclude: config.PortSet{{Lo: 9000, Hi: 9999}}}, map[int]int{3000: 3000}},
		{"only", config.AutoForward{Only: config.PortSet{{Lo: 80, Hi: 80}, {Lo: 7022, Hi: 7022}}}, map[int]int{80: 80, 7022: 7022}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, a := testAuto(t, newFakeNet(), "", tt.auto)
				defer a.close(0, true)
				a.report(ports(22, 80, 3000, 5432, 7022, 9229))
				if got := a.listening(); !same(got, tt.want) {
					t.Errorf("listening %v, want %v", got, tt.want)
				}
			})
		})
	}
}

// A port that stops listening is withdrawn after withdrawAfter, not
// before, and not while a connection is open; back, it gets the same
// local port; a flapping one waits longer each time.
func TestAutoWithdraw(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fn := newFakeNet()
		fn.taken["127.0.0.1:3000"] = true // another program's
		_, a := testAuto(t, fn, "", config.AutoForward{})
		defer a.close(0, true)
		a.report(ports(3000))
		if got := a.listening(); !same(got, map[int]int{3000: 3001}) {
			t.Fatalf("listening %v, want 3000 on the next free port, 3001", got)
		}
		a.report(ports())
		time.Sleep(withdrawAfter - time.Millisecond)
		synctest.Wait()
		if len(a.listening()) != 1 {
			t.Fatal("withdrawn before withdrawAfter")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if len(a.listening()) != 0 || fn.isBound("127.0.0.1:3001") {
			t.Fatalf("not withdrawn after withdrawAfter: %v", a.listening())
		}
		fn.taken["127.0.0.1:3000"] = false
		a.report(ports(3000)) // back within flapWindow: a flap
		if got := a.listening(); !same(got, map[int]int{3000: 3001}) {
			t.Fatalf("back: %v, want the same local port 3001", got)
		}
		a.report(ports())
		time.Sleep(2*withdrawAfter - time.Millisecond)
		synctest.Wait()
		if len(a.listening()) != 1 {
			t.Fatal("a flapping port was withdrawn as fast as a steady one")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if len(a.listening()) != 0 {
			t.Fatal("a flapping port was not withdrawn after twice the delay")
		}

		// An open connection holds the listener until it ends.
		a.report(ports(4000))
		a.mu.Lock()
		f := a.ports[4000].fwd
		a.mu.Unlock()
		f.stats.Open.Add(1)
		a.report(ports())
		time.Sleep(10 * withdrawAfter)
		synctest.Wait()
		if len(a.listening()) != 1 {
			t.Fatal("withdrawn with a connection open")
		}
		f.stats.Open.Add(-1)
		time.Sleep(time.Second)
		synctest.Wait()
		if len(a.listening()) != 0 {
			t.Fatal("not withdrawn once its connection ended")
		}
	})
}

// A sprite that lists thousands of ports gets MaxAutoPorts listeners, the
// lowest, and a port flapping every second keeps its one listener.
func TestAutoLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a := testAuto(t, newFakeNet(), "", config.AutoForward{})
		defer a.close(0, true)
		var many []int
		for p := 10000; p < 15000; p++ {
			many = append(many, p)
		}
		a.report(ports(many...))
		got := a.listening()
		if len(got) != MaxAutoPorts || got[10000] == 0 || got[10000+MaxAutoPorts-1] == 0 {
			t.Fatalf("%d listeners, want the lowest %d", len(got), MaxAutoPorts)
		}
		a.report(ports())
		time.Sleep(withdrawAfter)
		synctest.Wait()
		for range 20 {
			a.report(ports(8000))
			time.Sleep(500 * time.Millisecond)
			a.report(ports())
			time.Sleep(500 * time.Millisecond)
		}
		synctest.Wait()
		a.mu.Lock()
		p := a.ports[8000]
		a.mu.Unlock()
		if p.fwd == nil || p.flaps != 0 {
			t.Fatalf("a port flapping every second: forward %v, %d withdrawals; want one listener throughout", p.fwd != nil, p.flaps)
		}
	})
}

// The state file brings a sprite's listeners back at start, on the same
// local ports; a corrupt one, or one of another version, starts empty.
func TestAutoState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		fn := newFakeNet()
		fn.taken["127.0.0.1:3000"] = true
		_, a := testAuto(t, fn, dir, config.AutoForward{})
		a.report(ports(3000, 4000))
		a.report(ports(3000, 4000, 4500))
		a.close(0, true)
		_, b := testAuto(t, fn, dir, config.AutoForward{})
		if got, want := b.listening(), map[int]int{3000: 3001, 4000: 4000, 4500: 4500}; !same(got, want) {
			t.Fatalf("after a restart: %v, want %v", got, want)
		}
		b.close(0, true)
		for _, text := range []string{"{", `{"version":99,"sprite":"dev","ports":[]}`, `{"version":1,"sprite":"dev","ports":[{"port":0}]}`} {
			if err := os.WriteFile(stateFile(dir, "dev"), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, c := testAuto(t, fn, dir, config.AutoForward{})
			if got := c.listening(); len(got) != 0 {
				t.Errorf("state %q: listening %v, want nothing", text, got)
			}
			c.close(0, true)
		}
	})
}

func FuzzAutoState(f *testing.F) {
	f.Add([]byte(`{"version":1,"sprite":"dev","ports":[{"port":3000,"local":3001,"name":"node","active":true}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseAutoState(b, "dev")
		if err != nil {
			return
		}
		if st.Version != autoStateVersion || len(st.Ports) > maxKnownPorts {
			t.Fatalf("accepted %+v", st)
		}
		seen := map[int]bool{}
		for _, p := range st.Ports {
			if p.Port < 1 || p.Port > 65535 || p.Local < 0 || p.Local > 65535 || seen[p.Port] {
				t.Fatalf("accepted port %+v", p)
			}
			seen[p.Port] = true
		}
		_ = fmt.Sprint(st)
	})
}

// A connection counts once in its sprite's auto-forwarder, whatever the
// order its link's up and end arrive in, from whichever goroutines: a
// count left behind would have the sprite looked at for ever.
func TestAutoLinkCountsEachConnectionOnce(t *testing.T) {
	d := New(Options{Log: zerolog.New(zerolog.NewTestWriter(t)), Listen: newFakeNet().listen})
	set := autoSettings(config.AutoForward{})
	set.Mode = config.Mux // no direct-mode reads: this daemon has no API client
	a := newAutoSprite(d, "dev", set, 7022, nil)
	defer a.close(0, true)
	active := func() int {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.active
	}
	var l autoLink
	l.up(a)
	l.up(a)
	if n := active(); n != 1 {
		t.Fatalf("up twice: %d connections, want 1", n)
	}
	l.down()
	l.down()
	if n := active(); n != 0 {
		t.Fatalf("down twice: %d connections, want 0", n)
	}
	var late autoLink
	late.down()
	late.up(a)
	if n := active(); n != 0 {
		t.Fatalf("up after its end: %d connections, want 0", n)
	}
	var none autoLink
	none.up(nil)
	none.down()

	links := make([]autoLink, 200)
	var wg sync.WaitGroup
	for i := range links {
		wg.Add(2)
		go func() { defer wg.Done(); links[i].up(a) }()
		go func() { defer wg.Done(); links[i].down() }()
	}
	wg.Wait()
	if n := active(); n != 0 {
		t.Fatalf("after 200 links ended: %d connections, want 0", n)
	}
}
