package socks

import (
	"bytes"
	"errors"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func domainRequest(cmd byte, host string, port int) []byte {
	b := []byte{version5, cmd, 0, atypDomain, byte(len(host))}
	b = append(b, host...)
	return append(b, byte(port>>8), byte(port))
}

func TestRequestSprite(t *testing.T) {
	tests := []struct {
		name   string
		raw    []byte
		sprite string
		port   int
		reply  byte // refused with this, if sprite is ""
		proto  bool // malformed
	}{
		{"name", domainRequest(cmdConnect, "web", 3000), "web", 3000, 0, false},
		{"suffix stripped", domainRequest(cmdConnect, "web.sprite", 3000), "web", 3000, 0, false},
		{"suffix and root dot, any case", domainRequest(cmdConnect, "Web.Sprite.", 80), "web", 80, 0, false},
		{"other domain", domainRequest(cmdConnect, "example.com", 443), "", 0, ReplyHostUnreachable, false},
		{"bind", domainRequest(0x02, "web", 3000), "", 0, ReplyCommandUnsupported, false},
		{"udp associate", domainRequest(0x03, "web", 3000), "", 0, ReplyCommandUnsupported, false},
		{"ipv4", []byte{version5, cmdConnect, 0, atypIPv4, 127, 0, 0, 1, 0, 80}, "", 0, ReplyAddressUnsupported, false},
		{"ipv6", append([]byte{version5, cmdConnect, 0, atypIPv6}, append(make([]byte, 16), 0, 80)...), "", 0, ReplyAddressUnsupported, false},
		{"port 0", domainRequest(cmdConnect, "web", 0), "", 0, ReplyNotAllowed, false},
		{"bad version", []byte{0x04, cmdConnect, 0, atypDomain, 1, 'a', 0, 80}, "", 0, 0, true},
		{"bad address type", []byte{version5, cmdConnect, 0, 0x09, 0, 80}, "", 0, 0, true},
		{"empty name", []byte{version5, cmdConnect, 0, atypDomain, 0, 0, 80}, "", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ReadRequest(bytes.NewReader(tt.raw))
			if tt.proto {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("ReadRequest: %v, want ErrProtocol", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sprite, err := req.Sprite(".sprite")
			var re *RequestError
			switch {
			case tt.sprite != "" && (err != nil || sprite != tt.sprite || req.Port != tt.port):
				t.Errorf("got %q:%d, %v; want %s:%d", sprite, req.Port, err, tt.sprite, tt.port)
			case tt.sprite == "" && (!errors.As(err, &re) || re.Reply != tt.reply):
				t.Errorf("got %q, %v; want refused with reply %d", sprite, err, tt.reply)
			}
		})
	}
}

func FuzzRequest(f *testing.F) {
	f.Add(domainRequest(cmdConnect, "web.sprite", 3000))
	f.Add([]byte{version5, cmdConnect, 0, atypIPv4, 127, 0, 0, 1, 0, 80})
	f.Add(append([]byte{version5, cmdConnect, 0, atypIPv6}, append(make([]byte, 16), 0, 80)...))
	f.Add([]byte{version5, 1, 0, atypDomain, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ReadRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		if req.Port < 0 || req.Port > 65535 || (req.IsIP == req.Domain) {
			t.Fatalf("request %+v from % x", req, b)
		}
		sprite, err := req.Sprite(".sprite")
		if err == nil && (!validSprite(sprite) || req.IsIP || req.Port == 0 || req.Command != cmdConnect) {
			t.Fatalf("accepted %+v as sprite %q", req, sprite)
		}
		var re *RequestError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("Sprite: %v is not a RequestError", err)
		}
	})
}
