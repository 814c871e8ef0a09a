//go:build !unix

package main

import (
	"net"
)

// socketPair returns the two ends of a loopback TCP connection: one for
// this process's stdio, one for the engine. It accepts only the connection
// it dialled itself.
func socketPair() (mine, theirs *net.TCPConn, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	for {
		s, err := ln.Accept()
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		if s.RemoteAddr().String() == c.LocalAddr().String() {
			return c.(*net.TCPConn), s.(*net.TCPConn), nil
		}
		s.Close()
	}
}
