package mux

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"
)

// writeRecorder is the link under a yamux session: it keeps a copy of
// every write, as the write was made.
type writeRecorder struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (r *writeRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writes = append(r.writes, bytes.Clone(p))
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *writeRecorder) recorded() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// yamuxWrites runs a real yamux session, with our config, over a
// recorder, sends each body as one stream write, and returns what the
// client's side wrote to its link. With coalesce the coalescer sits
// between yamux and the recorder, as in Dial.
func yamuxWrites(t *testing.T, bodies [][]byte, coalesce bool) [][]byte {
	t.Helper()
	a, b := net.Pipe()
	rec := &writeRecorder{Conn: a}
	var link io.ReadWriteCloser = rec
	if coalesce {
		link = &coalescer{ReadWriteCloser: rec}
	}
	client, err := yamux.Client(link, yamuxConfig(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := yamux.Server(b, yamuxConfig(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	total := 0
	for _, body := range bodies {
		total += len(body)
	}
	got := make(chan error, 1)
	go func() {
		st, err := server.AcceptStream()
		if err != nil {
			got <- err
			return
		}
		_, err = io.ReadFull(st, make([]byte, total))
		got <- err
	}()
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range bodies {
		if _, err := st.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	// The link is synchronous: once the server has read every byte, every
	// write that carried them has returned.
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	return rec.recorded()
}

// dataHeader reports whether p is a yamux data frame's header, and the
// length of the body it announces: the test the coalescer makes.
func dataHeader(p []byte) (uint32, bool) {
	if len(p) != 12 || p[1] != 0 {
		return 0, false
	}
	n := binary.BigEndian.Uint32(p[8:])
	return n, n > 0
}

// The coalescer holds a 12-byte yamux data header until the next write,
// and joins the two. That is right only while yamux writes each data
// frame as exactly two writes, the header and then the whole body, with
// nothing in between; if a yamux upgrade writes them together, splits the
// body, or changes the header, the batching is silently lost or frames
// are corrupted. This pins what yamux does.
func TestYamuxWritesHeaderThenBody(t *testing.T) {
	bodies := [][]byte{
		bytes.Repeat([]byte{1}, 1),
		bytes.Repeat([]byte{2}, headerLen+100),
		bytes.Repeat([]byte{3}, maxChunk/2),
		bytes.Repeat([]byte{4}, headerLen+maxChunk),
	}
	writes := yamuxWrites(t, bodies, false)
	next := 0
	for i := 0; i < len(writes); i++ {
		n, ok := dataHeader(writes[i])
		if !ok {
			continue
		}
		if i+1 == len(writes) || len(writes[i+1]) != int(n) {
			t.Fatalf("yamux wrote a data header announcing %d bytes, then %v: the coalescer needs the whole body as the next write (hashicorp/yamux changed? see coalescer in session.go)", n, lens(writes[i+1:]))
		}
		if next < len(bodies) && !bytes.Equal(writes[i+1], bodies[next]) {
			t.Fatalf("data frame %d carries %d bytes, want stream write %d's %d bytes in one frame", next, n, next, len(bodies[next]))
		}
		next++
		i++
	}
	if next != len(bodies) {
		t.Fatalf("found %d data frames written as header then body, want %d; writes were %v (hashicorp/yamux changed? see coalescer in session.go)", next, len(bodies), lens(writes))
	}
}

// With the coalescer in place, each data frame reaches the link as one
// write, header and body together: one message on a message-based link.
func TestCoalescerJoinsYamuxFrames(t *testing.T) {
	bodies := [][]byte{
		bytes.Repeat([]byte{1}, 1),
		bytes.Repeat([]byte{2}, headerLen+100),
		bytes.Repeat([]byte{3}, maxChunk-12),
	}
	writes := yamuxWrites(t, bodies, true)
	next := 0
	for _, w := range writes {
		if len(w) < 12 || w[1] != 0 || binary.BigEndian.Uint32(w[8:12]) == 0 {
			continue
		}
		if next < len(bodies) && !bytes.Equal(w[12:], bodies[next]) {
			t.Fatalf("data frame %d reached the link as a write of %d bytes, want header and %d-byte body in one", next, len(w), len(bodies[next]))
		}
		next++
	}
	if next != len(bodies) {
		t.Fatalf("found %d data frames written whole, want %d; writes were %v", next, len(bodies), lens(writes))
	}
}

func lens(writes [][]byte) []int {
	n := make([]int, len(writes))
	for i, w := range writes {
		n[i] = len(w)
	}
	return n
}
