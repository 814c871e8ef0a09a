package mux

import (
	"bytes"
	"io"
	"testing"
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
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, headerLen))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, resume, _, err := readFirst(bytes.NewReader(data))
		if err == nil {
			if !resume && (o.Port < 1 || o.Port > 65535 || len(o.Host) == 0 || len(o.Host) > maxHost) {
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

// FuzzHello plays a stranger that sends arbitrary bytes as its hello: the
// agent must refuse it (no stranger can know the secret) and never panic.
func FuzzHello(f *testing.F) {
	f.Add(make([]byte, helloLen))
	f.Add(append([]byte("SFWD\x01"), make([]byte, helloLen)...))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	secret := NewSecret()
	f.Fuzz(func(t *testing.T, data []byte) {
		rw := &scripted{in: bytes.NewReader(data)}
		if _, _, err := AcceptHello(rw, secret, nil); err == nil {
			t.Fatalf("a hello of %d arbitrary bytes was accepted", len(data))
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
