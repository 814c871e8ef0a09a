package socks

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/sock"
)

// startServer serves s on loopback with an echo in place of every sprite
// but "down" (nothing listens) and "gone" (no such sprite).
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	s.Log = zerolog.Nop()
	s.Exists = func(_ context.Context, sprite string) (bool, error) { return sprite != "gone", nil }
	s.Carry = func(sprite string, port int, c net.Conn, done func(error)) error {
		if sprite == "down" {
			c.Close()
			return fmt.Errorf("sprite down port %d: %w", port, ErrRefused)
		}
		go func() {
			fmt.Fprintf(c, "%s:%d ", sprite, port)
			io.Copy(c, c)
			c.(sock.Conn).CloseWrite()
			c.Close()
			done(nil)
		}()
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// dial runs a SOCKS5 handshake and returns the reply code, and the
// connection if granted.
func dial(t *testing.T, addr string, auth []string, req []byte) (byte, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	method := byte(methodNone)
	if auth != nil {
		method = methodPassword
	}
	c.Write([]byte{version5, 1, method})
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	if b[1] != method {
		return 0xFF, nil
	}
	if auth != nil {
		msg := []byte{authVersion, byte(len(auth[0]))}
		msg = append(msg, auth[0]...)
		msg = append(msg, byte(len(auth[1])))
		c.Write(append(msg, auth[1]...))
		if _, err := io.ReadFull(c, b[:]); err != nil || b[1] != 0 {
			return 0xFE, nil // authentication refused
		}
	}
	c.Write(req)
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	return rep[1], c
}

func TestServer(t *testing.T) {
	open := startServer(t, &Server{Suffix: ".sprite"})
	authed := startServer(t, &Server{Suffix: ".sprite", Users: map[string]string{"me": "s3cret"}})
	tests := []struct {
		name  string
		addr  string
		auth  []string
		req   []byte
		reply byte
	}{
		{"granted", open, nil, domainRequest(cmdConnect, "web.sprite", 3000), ReplySucceeded},
		{"ip refused", open, nil, []byte{version5, cmdConnect, 0, atypIPv4, 10, 0, 0, 1, 0, 80}, ReplyAddressUnsupported},
		{"no such sprite", open, nil, domainRequest(cmdConnect, "gone", 80), ReplyHostUnreachable},
		{"nothing listens", open, nil, domainRequest(cmdConnect, "down", 80), ReplyConnectionRefused},
		{"auth required", authed, nil, domainRequest(cmdConnect, "web", 80), 0xFF},
		{"wrong password", authed, []string{"me", "nope"}, domainRequest(cmdConnect, "web", 80), 0xFE},
		{"right password", authed, []string{"me", "s3cret"}, domainRequest(cmdConnect, "web", 80), ReplySucceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, c := dial(t, tt.addr, tt.auth, tt.req)
			if code != tt.reply {
				t.Fatalf("reply %#x, want %#x", code, tt.reply)
			}
			if code != ReplySucceeded {
				return
			}
			c.Write([]byte("hi"))
			c.(*net.TCPConn).CloseWrite()
			got, _ := io.ReadAll(c)
			port := int(tt.req[len(tt.req)-2])<<8 | int(tt.req[len(tt.req)-1])
			if want := fmt.Sprintf("web:%d hi", port); string(got) != want {
				t.Errorf("through the proxy: %q, want %q", got, want)
			}
		})
	}
}

func TestHTTPConnect(t *testing.T) {
	addr := startServer(t, &Server{Suffix: ".sprite", Users: map[string]string{"me": "s3cret"}})
	for _, tt := range []struct {
		name, target, auth string
		status             int
	}{
		{"granted", "web.sprite:3000", "me:s3cret", http.StatusOK},
		{"no credentials", "web.sprite:3000", "", http.StatusProxyAuthRequired},
		{"no such sprite", "gone:80", "me:s3cret", http.StatusNotFound},
		{"ip", "10.0.0.1:80", "me:s3cret", http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", tt.target, tt.target)
			if tt.auth != "" {
				fmt.Fprintf(c, "Proxy-Authorization: Basic %s\r\n", base64.StdEncoding.EncodeToString([]byte(tt.auth)))
			}
			fmt.Fprint(c, "\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status != http.StatusOK {
				return
			}
			c.Write([]byte("hi"))
			c.(*net.TCPConn).CloseWrite()
			got, _ := io.ReadAll(br)
			if string(got) != "web:3000 hi" {
				t.Errorf("through the proxy: %q", got)
			}
		})
	}
}
