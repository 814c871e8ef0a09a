package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

// shaper is a WAN between the daemon and the emulator, in user space (the
// kernel here has no netem): a toxiproxy proxy whose every byte, each way,
// passes a shared link rate and then half the round trip (± jitter). The
// TLS handshake, the upgrade and the data all pay it; the TCP handshake
// does not, as the kernel answers the SYN before toxiproxy sees the
// connection, so callers count that round trip themselves.
type shaper struct {
	t     *testing.T
	proxy *toxiproxy.Proxy
	addr  string
}

func newShaper(t *testing.T, upstream string) *shaper {
	// toxiproxy's own bandwidth toxic limits each connection alone, so 8
	// connections would get 8 links' worth; linkRate is one link that
	// every connection of the proxy shares, as a user's access link is.
	toxics.Register("link_rate", new(linkRate))
	toxics.Register("wan_delay", new(wanDelay))
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "wan", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("shaper: %v", err)
	}
	t.Cleanup(p.Stop)
	return &shaper{t: t, proxy: p, addr: p.Listen}
}

// set replaces the link: rtt ± jitter in all (half each way) and a rate in
// bits per second each way (0: no limit). Open connections take the new
// link at once.
func (s *shaper) set(rtt, jitter time.Duration, bitsPerSec int64) {
	s.proxy.Toxics.ResetToxics(context.Background())
	for _, dir := range []string{"upstream", "downstream"} {
		if bitsPerSec > 0 {
			s.add(dir, "link_rate", map[string]any{"rate": bitsPerSec / 8})
		}
		if rtt > 0 {
			s.add(dir, "wan_delay", map[string]any{"latency": (rtt / 2).Milliseconds(), "jitter": (jitter / 2).Milliseconds()})
		}
	}
}

func (s *shaper) add(dir, typ string, attrs map[string]any) {
	body, _ := json.Marshal(map[string]any{"name": typ + "_" + dir, "type": typ, "stream": dir, "toxicity": 1, "attributes": attrs})
	if _, err := s.proxy.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		s.t.Fatalf("shaper: %s %s: %v", typ, dir, err)
	}
}

// cut drops every connection through the shaper, as a dead network path
// does; new ones pass again.
func (s *shaper) cut() {
	s.proxy.Stop()
	s.proxy.Listen = s.addr
	if err := s.proxy.Start(); err != nil {
		s.t.Fatalf("shaper: restart after cut: %v", err)
	}
}

// linkRate is a toxic that sends each chunk when the shared link is free
// and has taken the chunk's bytes at Rate. One instance serves every
// connection of a proxy in one direction.
type linkRate struct {
	Rate int64 `json:"rate"` // bytes per second

	mu   sync.Mutex
	free time.Time // when the link has sent what it was given
}

func (r *linkRate) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			r.mu.Lock()
			start := time.Now()
			if r.free.After(start) {
				start = r.free
			}
			r.free = start.Add(time.Duration(len(c.Data)) * time.Second / time.Duration(max(r.Rate, 1)))
			done := r.free
			r.mu.Unlock()
			// A timer per chunk costs more than a small chunk takes at a
			// gigabit; the debt is kept in free, so the rate stays exact.
			if wait := time.Until(done); wait > time.Millisecond {
				select {
				case <-time.After(wait):
				case <-stub.Interrupt:
					stub.Output <- c // a toxic change must lose no byte
					return
				}
			}
			// The latency that follows counts from here, as propagation
			// follows serialization on a real link.
			c.Timestamp = time.Now()
			stub.Output <- c
		}
	}
}

// wanDelay is toxiproxy's latency toxic with room for a gigabit's round
// trip in flight: the latency toxic queues at most 1,024 chunks, which
// capped one connection near 200 Mbit/s at a 100 ms round trip.
type wanDelay struct {
	toxics.LatencyToxic
}

func (t *wanDelay) GetBufferSize() int { return 1 << 16 }

// TestShaper checks the shaper itself, quickly: an echo through it takes
// a round trip (not half, not two), a connection's bytes keep their
// order, 8 connections share one link's rate, and a cut ends connections.
func TestShaper(t *testing.T) {
	echo := testsvc.Serve(t, testsvc.Echo)
	s := newShaper(t, echo)
	const rtt = 100 * time.Millisecond
	s.set(rtt, 0, 8<<20) // 8 Mbit/s: 1 MiB/s
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < rtt || took > rtt+rtt/2 {
		t.Errorf("one-byte echo took %v through a %v round trip", took, rtt)
	}

	// 8 connections × 128 KiB up and back at 1 MiB/s each way: about 1 s
	// on a shared link, 1/8 of that if each connection had its own.
	const per = 128 << 10
	start = time.Now()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			msg := bytes.Repeat([]byte{byte(i)}, per)
			go c.Write(msg)
			got := make([]byte, per)
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				t.Errorf("connection %d: %v, bytes intact %v", i, err, bytes.Equal(got, msg))
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took < 900*time.Millisecond || took > 2*time.Second {
		t.Errorf("8 × %d KiB echoed in %v; a shared 1 MiB/s link takes about 1.1 s", per>>10, took)
	}

	s.cut()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a connection survived the cut")
	}
	s.set(0, 0, 0)
	c2, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatalf("after the cut: %v", err)
	}
	defer c2.Close()
	c2.Write([]byte("y"))
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c2, make([]byte, 1)); err != nil {
		t.Fatalf("echo after the cut: %v", err)
	}
}
