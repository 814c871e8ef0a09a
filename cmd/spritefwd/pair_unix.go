//go:build unix

package main

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// socketPair returns the two ends of a connected stream socket: one for
// this process's stdio, one for the engine, which carries it as it would a
// client's connection.
func socketPair() (mine, theirs *net.UnixConn, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	conn := func(fd int, name string) (*net.UnixConn, error) {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close() // FileConn dups it
		c, err := net.FileConn(f)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}
	if mine, err = conn(fds[0], "stdio"); err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	if theirs, err = conn(fds[1], "engine"); err != nil {
		mine.Close()
		return nil, nil, err
	}
	return mine, theirs, nil
}
