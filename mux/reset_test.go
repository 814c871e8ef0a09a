package mux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestDialResetCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want ResetCode
	}{
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, ResetRefused},
		{"not allowed", fmt.Errorf("%w: loopback only", ErrNotAllowed), ResetNotAllowed},
		{"timeout", context.DeadlineExceeded, ResetUnreachable},
		{"no route", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, ResetUnreachable},
		{"no such host", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}}, ResetUnreachable},
		{"anything else", errors.New("connection refused, says the text"), ResetError},
	}
	for _, tt := range tests {
		if got := DialResetCode(tt.err); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestResetCodeReachesDaemon: the agent says "nothing listens" as a code,
// which the daemon's side of the stream reports without reading text.
func TestResetCodeReachesDaemon(t *testing.T) {
	r := newAgentRig(t)
	c := newClient(t, r)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	client, st := openPair(t, c, port)
	defer client.Close()
	<-st.Done()
	code, ok := ResetCodeOf(st.Err())
	if !ok || code != ResetRefused || !errors.Is(st.Err(), ErrPeerReset) {
		t.Fatalf("stream ended with %v (code %v, peer reset %v), want a peer reset with code %v", st.Err(), code, ok, ResetRefused)
	}
}
