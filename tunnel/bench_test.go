package tunnel

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// sink reads a length, then that many bytes, then acknowledges, so a
// transfer is timed to its last byte. It needs no half-close, which a
// direct-mode link cannot carry.
func sink(c net.Conn) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(hdr[:]))
	if _, err := io.CopyN(io.Discard, c, n); err != nil {
		return
	}
	c.Write([]byte{1})
}

func pushThrough(b *testing.B, addr string, size int64) time.Duration {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	start := time.Now()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	c.Write(hdr[:])
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkThroughput moves 64 MiB one way, to a sink, through the daemon
// and the emulator, and directly over loopback in the same run. The
// tunnel/loopback metric is the share of the physical limit we reach.
func BenchmarkThroughput(b *testing.B) {
	const size = 64 << 20
	sim := spritestest.NewServer(spritestest.Options{Token: testToken, IdleSleep: -1})
	defer sim.Close()
	direct := testsvc.Serve(b, sink)
	sim.Map("db", 9, direct)
	d := New(Options{Getenv: func(string) string { return testToken }})
	defer d.Shutdown(time.Second)
	applyYAML(b, d, sim.URL, "  - 0:db:9\n")
	tunnelAddr := d.Status()[0].Addrs[0]

	var viaLoop, viaTunnel time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		viaLoop += pushThrough(b, direct, size)
		viaTunnel += pushThrough(b, tunnelAddr, size)
	}
	n := float64(b.N)
	b.ReportMetric(float64(size)*8/1e9/(viaLoop.Seconds()/n), "loopback-Gbit/s")
	b.ReportMetric(float64(size)*8/1e9/(viaTunnel.Seconds()/n), "tunnel-Gbit/s")
	b.ReportMetric(viaLoop.Seconds()/viaTunnel.Seconds(), "tunnel/loopback")
}

// BenchmarkSetup times connect → first echoed byte through the daemon and
// the emulator, in process, for profiling the per-connection path.
func BenchmarkSetup(b *testing.B) {
	sim := spritestest.NewServer(spritestest.Options{Token: testToken, IdleSleep: -1})
	defer sim.Close()
	sim.Map("db", 7, testsvc.Serve(b, testsvc.Echo))
	d := New(Options{Getenv: func(string) string { return testToken }})
	defer d.Shutdown(time.Second)
	applyYAML(b, d, sim.URL, "  - 0:db:7\n")
	addr := d.Status()[0].Addrs[0]
	one := make([]byte, 1)
	b.ResetTimer()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.Write(one)
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
