package mux

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// ListeningPort is one TCP port that the agent's sprite listens on.
type ListeningPort struct {
	Port int    `json:"port"`
	Addr string `json:"addr,omitempty"` // the address it listens on, such as 127.0.0.1 or ::
	PID  int    `json:"pid,omitempty"`  // 0 when the agent cannot tell
	Name string `json:"name,omitempty"` // the process's command name, when known
}

// PortList is every port the sprite listens on, sorted by port. Truncated
// says the agent had more than MaxWatchPorts and sent the lowest.
type PortList struct {
	Ports     []ListeningPort `json:"ports"`
	Truncated bool            `json:"truncated,omitempty"`
}

const (
	// MaxWatchPorts bounds one PortList.
	MaxWatchPorts = 4096
	// maxPortsPayload fits MaxWatchPorts entries with long names.
	maxPortsPayload = 512 << 10
	maxPortName     = 64
)

// ErrNoWatch: the agent does not watch ports (the Server has no Ports).
var ErrNoWatch = errors.New("the agent does not watch ports")

func encodePorts(l PortList) ([]byte, error) {
	if len(l.Ports) > MaxWatchPorts {
		l.Ports, l.Truncated = l.Ports[:MaxWatchPorts], true
	}
	for i := range l.Ports {
		if len(l.Ports[i].Name) > maxPortName {
			l.Ports[i].Name = l.Ports[i].Name[:maxPortName]
		}
	}
	return json.Marshal(l)
}

func decodePorts(b []byte) (PortList, error) {
	var l PortList
	if err := json.Unmarshal(b, &l); err != nil {
		return PortList{}, fmt.Errorf("%w: ports frame: %w", ErrProtocol, err)
	}
	if len(l.Ports) > MaxWatchPorts {
		return PortList{}, fmt.Errorf("%w: ports frame lists %d ports (limit %d)", ErrProtocol, len(l.Ports), MaxWatchPorts)
	}
	for _, p := range l.Ports {
		if p.Port < 1 || p.Port > 65535 {
			return PortList{}, fmt.Errorf("%w: ports frame: port %d", ErrProtocol, p.Port)
		}
	}
	return l, nil
}

// WatchPorts asks the agent for its sprite's listening ports: fn gets the
// whole list at once, then again at every change, until ctx ends, the
// session ends or the agent refuses (ErrNoWatch). It sends nothing after
// the ask, so it never keeps a sprite awake by itself.
func (s *Session) WatchPorts(ctx context.Context, fn func(PortList)) error {
	c, err := s.ys.OpenStream()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { abortCarrier(c) })
	defer stop()
	defer c.Close()
	if err := writeFrame(c, frame{typ: frameWatch}, nil); err != nil {
		return err
	}
	var hdr [headerLen]byte
	for {
		f, err := readFrame(c, hdr[:])
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		payload := make([]byte, f.n)
		if _, err := io.ReadFull(c, payload); err != nil {
			return err
		}
		switch f.typ {
		case framePorts:
			l, err := decodePorts(payload)
			if err != nil {
				return err
			}
			fn(l)
		case frameReset:
			return fmt.Errorf("%w: %s", ErrNoWatch, clip(payload))
		default:
			return fmt.Errorf("%w: %s frame on a watch", ErrProtocol, f.typ)
		}
	}
}

// serveWatch answers a watch carrier with the sprite's ports until the
// daemon closes it or the agent stops.
func (s *Server) serveWatch(c *yamux.Stream) {
	if s.Ports == nil {
		_ = writeFrame(c, frame{typ: frameReset, a: uint64(ResetError)}, []byte(ErrNoWatch.Error()))
		c.Close()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.mu.Lock()
	if s.watches == nil {
		s.watches = map[*context.CancelFunc]struct{}{}
	}
	s.watches[&cancel] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watches, &cancel)
		s.mu.Unlock()
	}()
	go func() {
		// The daemon sends nothing more; a read ends when it closes.
		_, _ = io.Copy(io.Discard, c)
		cancel()
	}()
	s.Ports(ctx, func(l PortList) {
		b, err := encodePorts(l)
		if err == nil {
			_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if writeFrame(c, frame{typ: framePorts}, b) != nil {
				cancel()
			}
		}
	})
	abortCarrier(c)
}
