package mux

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
	"time"
)

// FuzzFrame feeds arbitrary bytes to the carrier's first-frame reader and
// the header parser: they must reject or bound what they read, never
// panic, and never allocate beyond the per-type limits.
func FuzzFrame(f *testing.F) {
	var b bytes.Buffer
	writeFrame(&b, frame{typ: frameOpen, a: 7, b: 5432}, []byte("localhost"))
	f.Add(b.Bytes())
	b.Reset()
	writeFrame(&b, frame{typ: frameResume, a: 7, b: 1 << 40}, nil)
	f.Add(b.Bytes())
	b.Reset()
	writeFrame(&b, frame{typ: frameData, a: 0, b: 0}, []byte("hello"))
	f.Add(b.Bytes())
	b.Reset()
	writeFrame(&b, frame{typ: frameWatch}, nil)
	f.Add(b.Bytes())
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, headerLen))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, resume, _, err := readFirst(bytes.NewReader(data))
		if err == nil {
			switch {
			case o.Watch && (resume || o.Host != "" || o.Port != 0):
				t.Fatalf("a watch carrier that also names %q:%d (resume %v)", o.Host, o.Port, resume)
			case !resume && !o.Watch && (o.Port < 1 || o.Port > 65535 || len(o.Host) == 0 || len(o.Host) > maxHost):
				t.Fatalf("accepted an open frame for %q:%d", o.Host, o.Port)
			}
		}
		if len(data) >= headerLen {
			h, err := parseHeader(data)
			if err == nil {
				var out [headerLen]byte
				h.put(out[:])
				if !bytes.Equal(out[:], data[:headerLen]) {
					t.Fatalf("header does not round-trip: % x -> % x", data[:headerLen], out)
				}
				if h.typ == frameData && (h.n == 0 || h.n > MaxPayload) {
					t.Fatalf("accepted a data frame of %d bytes", h.n)
				}
			}
		}
	})
}

// FuzzHello plays a stranger that sends arbitrary bytes as its half of the
// handshake, to each side: the agent must refuse it as a daemon, and the
// daemon must refuse it as an agent (no stranger can know the secret, nor
// the nonce the other side has yet to draw), and neither may panic.
func FuzzHello(f *testing.F) {
	secret := NewSecret()
	v2 := func(role byte, rest ...[]byte) []byte {
		b := append([]byte(magic), Version, role)
		b = append(b, make([]byte, nonceLen)...)
		for _, r := range rest {
			b = append(b, r...)
		}
		return b
	}
	f.Add(v2(roleDaemon, make([]byte, proofLen)))
	f.Add(v2(roleAgent, []byte{statusOK, 0, 0, 0}, make([]byte, sha256.Size)))
	f.Add(v2(roleAgent, []byte{statusOK, 1, 0, 2, 'h', 'i'}, make([]byte, sha256.Size)))
	f.Add(v2(roleAgent, make([]byte, proofLen)))
	// Version 1: the agent greeted with 37 bytes and accepted 61.
	f.Add(append([]byte("SFWD\x01"), make([]byte, 32+61)...))
	f.Add(append([]byte("SFWD\x01"), make([]byte, 32+4)...))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		rw := &scripted{in: bytes.NewReader(data)}
		if _, _, err := AcceptHello(rw, secret, nil); err == nil {
			t.Fatalf("the agent accepted a hello of %d arbitrary bytes", len(data))
		}
		rw = &scripted{in: bytes.NewReader(data)}
		h := Hello{Session: NewSessionID(), ResumeWindow: time.Second, Buffer: DefaultBuffer}
		if _, err := ClientHello(rw, secret, h); err == nil {
			t.Fatalf("the daemon accepted %d arbitrary bytes as the agent's proof", len(data))
		}
	})
}

// scripted is a connection whose peer says only what it was given.
type scripted struct {
	in  io.Reader
	out bytes.Buffer
}

func (s *scripted) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s *scripted) Write(p []byte) (int, error) { return s.out.Write(p) }
