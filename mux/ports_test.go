package mux

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// watchRig serves one agent whose sprite's ports are the lists sent on
// lists, and returns a session to it.
func watchRig(t *testing.T, ports func(ctx context.Context, changed func(PortList))) *Session {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Secret: NewSecret(), Log: zerolog.Nop(), Ports: ports}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err == nil {
			srv.ServeConn(c)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sess, _, err := Dial(context.Background(), c, srv.Secret, Hello{Session: NewSessionID(), ResumeWindow: time.Second, Buffer: DefaultBuffer}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close(); ln.Close(); srv.Close(); wg.Wait() })
	return sess
}

func TestWatchPorts(t *testing.T) {
	lists := make(chan PortList)
	sess := watchRig(t, func(ctx context.Context, changed func(PortList)) {
		for {
			select {
			case <-ctx.Done():
				return
			case l := <-lists:
				changed(l)
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan PortList)
	done := make(chan error, 1)
	go func() { done <- sess.WatchPorts(ctx, func(l PortList) { got <- l }) }()
	want := []PortList{
		{Ports: []ListeningPort{{Port: 3000, Addr: "127.0.0.1", PID: 7, Name: "node"}}},
		{Ports: []ListeningPort{{Port: 3000}, {Port: 5432, Name: "postgres"}}},
		{Ports: []ListeningPort{}},
	}
	for _, w := range want {
		lists <- w
		g := <-got
		if len(g.Ports) != len(w.Ports) {
			t.Fatalf("got %+v, want %+v", g, w)
		}
		for i := range w.Ports {
			if g.Ports[i] != w.Ports[i] {
				t.Fatalf("got %+v, want %+v", g, w)
			}
		}
	}
	// More than the bound: the lowest, marked truncated.
	many := PortList{}
	for p := 1; p <= MaxWatchPorts+5; p++ {
		many.Ports = append(many.Ports, ListeningPort{Port: p})
	}
	lists <- many
	if g := <-got; len(g.Ports) != MaxWatchPorts || !g.Truncated {
		t.Fatalf("got %d ports, truncated %v; want %d, truncated", len(g.Ports), g.Truncated, MaxWatchPorts)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchPorts after cancel: %v", err)
	}
}

func TestWatchPortsUnsupported(t *testing.T) {
	sess := watchRig(t, nil)
	if err := sess.WatchPorts(context.Background(), func(PortList) { t.Error("a list from an agent without a watcher") }); !errors.Is(err, ErrNoWatch) {
		t.Fatalf("got %v, want ErrNoWatch", err)
	}
}

func TestDecodePortsRejects(t *testing.T) {
	for _, b := range []string{`{"ports":[{"port":0}]}`, `{"ports":[{"port":70000}]}`, `nope`} {
		if _, err := decodePorts([]byte(b)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", b, err)
		}
	}
}
