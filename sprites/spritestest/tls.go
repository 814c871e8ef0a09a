package spritestest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	stdlog "log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// NewCertificates makes a CA and a server certificate it signs for
// 127.0.0.1, ::1 and localhost, both valid for a week. The daemon is then
// given the CA (caPEM), as a user would be given a private CA, so that its
// real verification runs: nothing is trusted that was not signed by it.
func NewCertificates() (caPEM []byte, cert tls.Certificate, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, cert, fmt.Errorf("CA key: %w", err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "spritefwd sim CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, cert, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err = x509.ParseCertificate(caDER)
	if err != nil {
		return nil, cert, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, cert, fmt.Errorf("server key: %w", err)
	}
	leaf := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, cert, fmt.Errorf("server certificate: %w", err)
	}
	cert = tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), cert, nil
}

// serial is a random 128-bit serial number: two runs' certificates must
// not share one, or a client that cached one could confuse them.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// TLSStats counts the TLS handshakes that carried a request. Every TCP
// connection a client uses makes one, so their sum is also how many
// connections clients opened to the API.
type TLSStats struct {
	Full    int64 `json:"full"`
	Resumed int64 `json:"resumed"`
}

// StartTLS serves TLS on ln with cert, as the real API does, and sets URL
// to https://. Session tickets are on (crypto/tls's default), so that a
// client's resumption works here as it does there.
func (s *Server) StartTLS(ln net.Listener, cert tls.Certificate) {
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"}, // the emulator speaks no HTTP/2
	}
	// A handshake is counted once the client has sent a request over it:
	// the server's own VerifyConnection runs before the client has checked
	// the certificate, so it would count one the client then refused.
	var seen sync.Map // *tls.Conn → struct{}
	s.http.ConnState = func(c net.Conn, st http.ConnState) {
		tc, ok := c.(*tls.Conn)
		if !ok {
			return
		}
		switch st {
		case http.StateActive:
			if _, dup := seen.LoadOrStore(tc, struct{}{}); dup {
				return
			}
			if tc.ConnectionState().DidResume {
				s.tlsResumed.Add(1)
			} else {
				s.tlsFull.Add(1)
			}
		case http.StateHijacked, http.StateClosed:
			seen.Delete(tc)
		}
	}
	// A client that refuses the certificate is what a test of verification
	// wants: its handshake errors go to the debug log, not to stderr.
	s.http.ErrorLog = stdlog.New(debugWriter{s.log}, "", 0)
	s.Start(tls.NewListener(ln, cfg))
	s.URL = "https://" + ln.Addr().String()
}

type debugWriter struct{ log zerolog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TLSHandshakes returns the TLS handshakes completed so far.
func (s *Server) TLSHandshakes() TLSStats {
	return TLSStats{Full: s.tlsFull.Load(), Resumed: s.tlsResumed.Load()}
}
