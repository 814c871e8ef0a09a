package sprites_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// tlsSim serves the emulator over TLS with a certificate from a fresh CA,
// and returns it with that CA's PEM.
func tlsSim(t *testing.T) (*spritestest.Server, []byte) {
	t.Helper()
	caPEM, cert, err := spritestest.NewCertificates()
	if err != nil {
		t.Fatal(err)
	}
	sim := spritestest.New(spritestest.Options{Token: token, WakeDelay: 50 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim.StartTLS(ln, cert)
	t.Cleanup(sim.Close)
	sim.Map("db", 5432, echoServer(t, 0))
	return sim, caPEM
}

// trustingClient serves the emulator over TLS and returns it with a client
// that trusts its CA through Options.RootCAs.
func trustingClient(t *testing.T) (*spritestest.Server, *sprites.Client) {
	t.Helper()
	sim, caPEM := tlsSim(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c, err := sprites.New(sprites.Options{APIURL: sim.URL, Token: token, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return sim, c
}

// TestRootCAs: with the emulator's CA in Options.RootCAs, links verify and
// echo, and the second link resumes the first's TLS session; without it,
// the same dial fails on the certificate, as verification is never off.
func TestRootCAs(t *testing.T) {
	sim, c := trustingClient(t)
	for i := range 2 {
		link, err := c.Dial(context.Background(), "db", "localhost", 5432)
		if err != nil {
			t.Fatalf("dial %d: %v", i+1, err)
		}
		roundTrip(t, link, "through a private CA")
		link.CloseNow()
	}
	if _, err := c.List(context.Background(), ""); err != nil {
		t.Fatalf("REST call with RootCAs: %v", err)
	}
	c.Close() // waits for the message-size probe, whose handshake counts too
	if hs := sim.TLSHandshakes(); hs.Resumed < 1 {
		t.Errorf("TLS handshakes %+v: want the second link to resume the first's session", hs)
	}

	plain, err := sprites.New(sprites.Options{APIURL: sim.URL, Token: token, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_, err = plain.Dial(context.Background(), "db", "localhost", 5432)
	var se *sprites.Error
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("dial without the CA: %v, want a *sprites.Error for a certificate of unknown authority", err)
	}
}

// TestSSLCertFile: a client with no RootCAs trusts the CA in
// $SSL_CERT_FILE. Go's crypto/x509 reads it when it loads the system
// roots, once per process, on Linux and the other Unixes but not macOS or
// Windows; so the check runs in a child process that starts with it set.
func TestSSLCertFile(t *testing.T) {
	if url := os.Getenv("SPRITEFWD_TEST_SSL_URL"); url != "" {
		c, err := sprites.New(sprites.Options{APIURL: url, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.List(context.Background(), ""); err != nil {
			t.Fatalf("with SSL_CERT_FILE=%s: %v", os.Getenv("SSL_CERT_FILE"), err)
		}
		return
	}
	if runtime.GOOS == "darwin" || runtime.GOOS == "windows" {
		t.Skip("crypto/x509 reads $SSL_CERT_FILE only on Linux and the other Unixes")
	}
	sim, caPEM := tlsSim(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		certFile string
		ok       bool
	}{{ca, true}, {os.DevNull, false}} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestSSLCertFile$", "-test.count", "1")
		cmd.Env = append(os.Environ(), "SPRITEFWD_TEST_SSL_URL="+sim.URL, "SSL_CERT_FILE="+tt.certFile)
		out, err := cmd.CombinedOutput()
		if (err == nil) != tt.ok {
			t.Errorf("SSL_CERT_FILE=%s: child err %v, want ok %v\n%s", tt.certFile, err, tt.ok, out)
		}
		if !tt.ok && !strings.Contains(string(out), "certificate") {
			t.Errorf("SSL_CERT_FILE=%s: want a certificate error\n%s", tt.certFile, out)
		}
	}
}

// TestUpgradesBesideRESTCalls: proxy upgrades and REST calls at once, as a
// message-size probe beside a keep_awake Get does. http.Transport writes
// its TLS config on its first request; the upgrader must not read it then
// (under -race this failed when the upgrader cloned the transport's config).
func TestUpgradesBesideRESTCalls(t *testing.T) {
	_, c := trustingClient(t)
	errs := make(chan error, 8)
	for range 4 {
		go func() {
			link, err := c.Dial(context.Background(), "db", "localhost", 5432)
			if err == nil {
				link.CloseNow()
			}
			errs <- err
		}()
		go func() { _, err := c.List(context.Background(), ""); errs <- err }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
