package tunnel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errBroken = errors.New("link cut")

// fakeRemote is the sprite side over net.Pipe. breakLink makes its reads
// fail the way a cut WebSocket does, after what was already sent.
type fakeRemote struct {
	net.Conn
	broken    atomic.Bool
	closedNow atomic.Bool
}

func (r *fakeRemote) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if err == io.EOF && r.broken.Load() {
		err = errBroken
	}
	return n, err
}

func (r *fakeRemote) CloseNow() error { r.closedNow.Store(true); return r.Conn.Close() }

type relayRig struct {
	client *net.TCPConn // what the user's program holds
	sprite net.Conn     // the server inside the sprite
	remote *fakeRemote
	up     atomic.Int64
	down   atomic.Int64
	busy   atomic.Bool
	done   chan RelayResult
}

func startRelay(t *testing.T, opts RelayOptions) *relayRig {
	t.Helper()
	client, local := testsvc.TCPPair(t)
	ours, theirs := net.Pipe()
	rig := &relayRig{client: client, sprite: theirs, remote: &fakeRemote{Conn: ours}, done: make(chan RelayResult, 1)}
	opts.Up, opts.Down, opts.Busy = &rig.up, &rig.down, &rig.busy
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	go func() { rig.done <- Relay(local, rig.remote, opts) }()
	t.Cleanup(func() {
		theirs.Close()
		select {
		case <-rig.done:
		case <-time.After(10 * time.Second):
			t.Error("relay did not return")
		}
	})
	return rig
}

func (r *relayRig) result(t *testing.T) RelayResult {
	t.Helper()
	select {
	case res := <-r.done:
		r.done <- res
		return res
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not return")
		return RelayResult{}
	}
}

func TestRelayCleanEndGivesFIN(t *testing.T) {
	rig := startRelay(t, RelayOptions{})
	go func() {
		buf := make([]byte, 5)
		io.ReadFull(rig.sprite, buf)
		rig.sprite.Write([]byte("world"))
		rig.sprite.Close()
	}()
	rig.client.Write([]byte("hello"))
	got, err := io.ReadAll(rig.client)
	if err != nil || string(got) != "world" {
		t.Fatalf("client read %q, %v; want world then EOF", got, err)
	}
	if res := rig.result(t); res.End != EndClean {
		t.Errorf("end %v (%v), want clean", res.End, res.Err)
	}
	if rig.up.Load() != 5 || rig.down.Load() != 5 {
		t.Errorf("counted up %d down %d, want 5 and 5", rig.up.Load(), rig.down.Load())
	}
}

// TestRelayBrokenLinkDeliversThenResets is the never-lose-data rule: a slow
// client still gets every byte the sprite sent, then ECONNRESET, not EOF.
func TestRelayBrokenLinkDeliversThenResets(t *testing.T) {
	rig := startRelay(t, RelayOptions{})
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, more than sockets usually hold
	sent := make(chan int, 1)
	go func() {
		n, _ := rig.sprite.Write(payload)
		sent <- n
	}()
	// Cut the link while the client is behind: bytes the relay has written
	// but the client has not read sit in the sockets, where a hasty reset
	// would destroy them.
	testsvc.Eventually(t, "unread bytes queued for the client", func() bool { return rig.down.Load() >= 16<<10 })
	rig.remote.broken.Store(true)
	rig.sprite.Close()
	n := <-sent // what the relay took before the cut; all of it if the sockets held it
	got, err := io.ReadAll(rig.client)
	if !bytes.Equal(got, payload[:n]) {
		t.Fatalf("client got %d bytes, want all %d the sprite sent", len(got), n)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the data the client read %v, want ECONNRESET", err)
	}
	res := rig.result(t)
	if res.End != EndLinkBroken || !errors.Is(res.Err, errBroken) {
		t.Errorf("end %v err %v, want link broken by errBroken", res.End, res.Err)
	}
}

func TestRelayHalfCloseKeepsReading(t *testing.T) {
	clientDone := make(chan struct{})
	rig := startRelay(t, RelayOptions{HalfCloseTimeout: 5 * time.Second, OnClientDone: func() { close(clientDone) }})
	go func() {
		req, _ := io.ReadAll(io.LimitReader(rig.sprite, 7))
		select { // the reply comes after the relay has seen the client's FIN
		case <-clientDone:
		case <-t.Context().Done():
			return
		}
		rig.sprite.Write(append([]byte("re: "), req...))
		rig.sprite.Close()
	}()
	rig.client.Write([]byte("request"))
	rig.client.CloseWrite()
	got, err := io.ReadAll(rig.client)
	if err != nil || string(got) != "re: request" {
		t.Fatalf("client read %q, %v", got, err)
	}
	if res := rig.result(t); res.End != EndClean {
		t.Errorf("end %v", res.End)
	}
}

func TestRelayHalfCloseTimeout(t *testing.T) {
	rig := startRelay(t, RelayOptions{HalfCloseTimeout: 100 * time.Millisecond})
	go io.Copy(io.Discard, rig.sprite) // a sprite that never answers nor closes
	rig.client.CloseWrite()
	if _, err := io.ReadAll(rig.client); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read error %v, want a reset: silence does not prove the reply was complete", err)
	}
	if res := rig.result(t); res.End != EndRemoteSilent || !rig.remote.closedNow.Load() {
		t.Errorf("end %v, link closed %v", res.End, rig.remote.closedNow.Load())
	}
}

func TestRelayClientResetAbortsLink(t *testing.T) {
	rig := startRelay(t, RelayOptions{})
	go io.Copy(io.Discard, rig.sprite)
	rig.client.Write([]byte("partial"))
	rig.client.SetLinger(0)
	rig.client.Close()
	res := rig.result(t)
	if res.End != EndClientAborted || !rig.remote.closedNow.Load() {
		t.Errorf("end %v, link aborted %v", res.End, rig.remote.closedNow.Load())
	}
}

func TestRelayMarksBusyWhileClientIsSlow(t *testing.T) {
	rig := startRelay(t, RelayOptions{})
	stop := make(chan struct{})
	go func() {
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := rig.sprite.Write(buf); err != nil {
				return
			}
		}
	}()
	testsvc.Eventually(t, "the relay to report being blocked on the client", rig.busy.Load)
	close(stop)
	rig.client.Close()
}

// chunkReader returns its chunks one Read at a time.
type chunkReader struct{ chunks [][]byte }

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if n == len(r.chunks[0]) {
		r.chunks = r.chunks[1:]
	} else {
		r.chunks[0] = r.chunks[0][n:]
	}
	return n, nil
}

// TestCopyAdaptsBuffer drives the buffer from small to large (a full read)
// and back (a run of short reads) and checks no byte is lost or reordered.
func TestCopyAdaptsBuffer(t *testing.T) {
	var want bytes.Buffer
	var chunks [][]byte
	add := func(n int) {
		c := make([]byte, n)
		rand.Read(c)
		want.Write(c)
		chunks = append(chunks, c)
	}
	add(smallBuf) // fills the small buffer: grow
	add(largeBuf)
	add(largeBuf + 100)
	for range 20 { // short reads: shrink
		add(10)
	}
	add(3 * largeBuf) // grow again
	var got bytes.Buffer
	var n atomic.Int64
	if r := copyCounting(&got, &chunkReader{chunks: chunks}, &n, nil, nil); r.readErr != nil || r.writeErr != nil {
		t.Fatal(r)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) || n.Load() != int64(want.Len()) {
		t.Fatalf("copied %d bytes (counted %d), want %d identical", got.Len(), n.Load(), want.Len())
	}
}
