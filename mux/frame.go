package mux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Every frame on a carrier (one yamux stream) starts with the same 21-byte
// header: a type, two 64-bit fields and a 32-bit length of what follows.
// A fixed header keeps the parser small and the fuzzer's job easy.
//
//	type    a            b            n        payload
//	open    stream id    target port  len host host
//	resume  stream id    bytes recvd  0        -
//	resumed 0            bytes recvd  0        -
//	data    offset       ack          len      bytes
//	ack     0            ack          0        -
//	fin     offset       ack          0        -
//	reset   code         0            len      reason
//	watch   0            0            0        -          (version 4)
//	ports   0            0            len      JSON PortList (version 4)
//
// A carrier that starts with watch carries no connection: the agent
// answers with a ports frame at once and another at every change of its
// sprite's listening ports, until the daemon closes it.
type frameType uint8

const (
	frameOpen frameType = 1 + iota
	frameResume
	frameResumed
	frameData
	frameAck
	frameFin
	frameReset
	frameWatch
	framePorts
)

func (t frameType) String() string {
	if t >= frameOpen && t <= framePorts {
		return [...]string{"open", "resume", "resumed", "data", "ack", "fin", "reset", "watch", "ports"}[t-1]
	}
	return fmt.Sprintf("frame(%d)", uint8(t))
}

const (
	headerLen = 21
	// MaxPayload bounds one data frame; the relay reads at most 32 KiB.
	MaxPayload   = 1 << 20
	maxHost      = 255
	maxReason    = 1024
	maxChunk     = 32 << 10
	frameBufSize = headerLen + maxChunk
)

// ErrProtocol reports a frame that breaks the protocol: the stream is reset.
var ErrProtocol = errors.New("mux protocol error")

type frame struct {
	typ  frameType
	a, b uint64
	n    uint32
}

func (f frame) put(b []byte) {
	b[0] = byte(f.typ)
	binary.BigEndian.PutUint64(b[1:], f.a)
	binary.BigEndian.PutUint64(b[9:], f.b)
	binary.BigEndian.PutUint32(b[17:], f.n)
}

// parseHeader decodes and checks a header; the payload length is bounded
// per type, so a hostile peer cannot make us allocate.
func parseHeader(b []byte) (frame, error) {
	if len(b) < headerLen {
		return frame{}, fmt.Errorf("%w: short header (%d bytes)", ErrProtocol, len(b))
	}
	f := frame{
		typ: frameType(b[0]),
		a:   binary.BigEndian.Uint64(b[1:]),
		b:   binary.BigEndian.Uint64(b[9:]),
		n:   binary.BigEndian.Uint32(b[17:]),
	}
	limit := uint32(0)
	switch f.typ {
	case frameData:
		limit = MaxPayload
		if f.n == 0 {
			return frame{}, fmt.Errorf("%w: empty data frame", ErrProtocol)
		}
	case frameOpen:
		limit = maxHost
		if f.n == 0 || f.b == 0 || f.b > 65535 {
			return frame{}, fmt.Errorf("%w: open frame wants a host and a port 1-65535", ErrProtocol)
		}
	case frameReset:
		limit = maxReason
	case framePorts:
		limit = maxPortsPayload
	case frameResume, frameResumed, frameAck, frameFin, frameWatch:
	default:
		return frame{}, fmt.Errorf("%w: unknown frame type %d", ErrProtocol, b[0])
	}
	if f.n > limit {
		return frame{}, fmt.Errorf("%w: %s frame of %d bytes (limit %d)", ErrProtocol, f.typ, f.n, limit)
	}
	return f, nil
}

// readFrame reads one header. The caller reads f.n payload bytes next.
func readFrame(r io.Reader, hdr []byte) (frame, error) {
	if _, err := io.ReadFull(r, hdr[:headerLen]); err != nil {
		return frame{}, err
	}
	return parseHeader(hdr)
}

// writeFrame writes a header and a small payload as one write, so that the
// frame is one yamux data frame.
func writeFrame(w io.Writer, f frame, payload []byte) error {
	b := make([]byte, headerLen+len(payload))
	f.n = uint32(len(payload))
	f.put(b)
	copy(b[headerLen:], payload)
	_, err := w.Write(b)
	return err
}

// openFrame is what a new stream asks the agent for.
type openFrame struct {
	ID    uint64
	Host  string
	Port  int
	Watch bool // a watch frame: no connection, the sprite's ports
}

// readFirst reads the first frame of a carrier the daemon opened: a new
// stream, or the resumption of one (resume is true, with the daemon's
// received byte count in recvd).
func readFirst(r io.Reader) (o openFrame, resume bool, recvd uint64, err error) {
	var hdr [headerLen]byte
	f, err := readFrame(r, hdr[:])
	if err != nil {
		return openFrame{}, false, 0, err
	}
	switch f.typ {
	case frameOpen:
		host := make([]byte, f.n)
		if _, err := io.ReadFull(r, host); err != nil {
			return openFrame{}, false, 0, err
		}
		return openFrame{ID: f.a, Host: string(host), Port: int(f.b)}, false, 0, nil
	case frameResume:
		return openFrame{ID: f.a}, true, f.b, nil
	case frameWatch:
		return openFrame{Watch: true}, false, 0, nil
	}
	return openFrame{}, false, 0, fmt.Errorf("%w: a carrier must start with open, resume or watch, not %s", ErrProtocol, f.typ)
}
