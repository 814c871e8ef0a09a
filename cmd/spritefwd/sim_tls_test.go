//go:build unix

package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// tlsHandshakes reads the emulator's GET /_sim/tls, trusting caFile.
func tlsHandshakes(t *testing.T, url, token, caFile string) spritestest.TLSStats {
	t.Helper()
	pool, err := config.LoadCA(caFile)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = pool
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, url+"/_sim/tls", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st spritestest.TLSStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("GET /_sim/tls: %d %v", resp.StatusCode, err)
	}
	return st
}

// runTLSDaemon runs the daemon on settings (api_url and the rest) with one
// direct forward, db, to port 5432 of sprite db, and returns its address.
func runTLSDaemon(t *testing.T, settings string) (addr string, applyErr error) {
	t.Helper()
	dir := t.TempDir()
	d := &daemonRig{t: t, dir: dir, path: filepath.Join(dir, "spritefwd.yaml"), socket: filepath.Join(dir, "ctl.sock")}
	os.WriteFile(d.path, []byte(settings+"forwards:\n  - {name: db, listen: 0, sprite: db, port: 5432}\n"), 0o600)
	cfg, err := config.Load(d.path)
	if err != nil {
		t.Fatal(err)
	}
	d.r = newRunner(runnerOptions{log: zerolog.New(io.Discard), configPath: d.path, cfg: cfg, socket: d.socket})
	if err := d.r.Start(); err != nil {
		return "", err
	}
	t.Cleanup(func() { d.r.Stop() })
	return d.addr("db"), nil
}

// TestSimTLS: `sim --tls` serves https with a certificate from a CA it
// writes to the file it names (removed when it exits); a daemon given that
// file as ca_file verifies it, forwards bytes, and resumes its first TLS
// session on later links.
func TestSimTLS(t *testing.T) {
	runtimeDir := t.TempDir()
	echo := testsvc.Serve(t, testsvc.Echo)
	r := startSim(t, map[string]string{"XDG_RUNTIME_DIR": runtimeDir}, "--tls", "--idle-sleep", "-1s", "--map", "db:5432="+echo)
	if !strings.HasPrefix(r.url, "https://127.0.0.1:") {
		t.Fatalf("serving %s, want https://127.0.0.1:…", r.url)
	}
	caFile, ok := strings.CutPrefix(r.caLine, "CA certificate in ")
	if !ok || !strings.HasPrefix(caFile, runtimeDir+"/") {
		t.Fatalf("CA line %q: want \"CA certificate in %s/…\"", r.caLine, runtimeDir)
	}
	token := r.tokenPath(t)
	addr, err := runTLSDaemon(t, fmt.Sprintf("api_url: %s\ntoken_file: %s\nca_file: %s\n", r.url, token, caFile))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		echoOnce(t, addr, 1000)
	}
	if hs := tlsHandshakes(t, r.url, readToken(t, token), caFile); hs.Resumed < 2 {
		t.Errorf("TLS handshakes %+v: want the 2nd and 3rd links to resume the 1st's session", hs)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(caFile); !os.IsNotExist(err) {
		t.Errorf("CA file %s still there after sim exited (%v)", caFile, err)
	}
}

// TestSimTLSCertFlags: --tls-cert and --tls-key serve the given pair, and
// --tls-ca-out puts the CA where asked; a daemon without the CA is refused
// by its own verification, which no setting turns off.
func TestSimTLSCertFlags(t *testing.T) {
	dir := t.TempDir()
	caPEM, cert, err := spritestest.NewCertificates()
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, caFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
	os.WriteFile(caFile, caPEM, 0o600)
	tokenFile := filepath.Join(dir, "token")

	r := startSim(t, nil, "--tls-cert", certFile, "--tls-key", keyFile, "--token-file", tokenFile)
	if r.caLine != "" || !strings.HasPrefix(r.url, "https://") {
		t.Fatalf("serving %s, CA line %q: want https and no CA line", r.url, r.caLine)
	}
	pool, _ := config.LoadCA(caFile)
	c, err := sprites.New(sprites.Options{APIURL: r.url, Token: readToken(t, tokenFile), RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.List(ctx, ""); err != nil {
		t.Fatalf("list with the CA: %v", err)
	}

	// No ca_file: the system's roots do not know this CA, so a client's
	// connection gets no byte back, and the emulator saw no handshake.
	before := tlsHandshakes(t, r.url, readToken(t, tokenFile), caFile)
	addr, err := runTLSDaemon(t, fmt.Sprintf("api_url: %s\ntoken_file: %s\nwake_timeout: 2s\n", r.url, tokenFile))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("x"))
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); n > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("without ca_file: read %d bytes, %v; want the connection closed unanswered", n, err)
	}
	after := tlsHandshakes(t, r.url, readToken(t, tokenFile), caFile)
	if after.Full+after.Resumed != before.Full+before.Resumed+1 { // our own look at /_sim/tls
		t.Errorf("handshakes %+v then %+v: the daemon completed one without the CA", before, after)
	}

	out := filepath.Join(dir, "out-ca.pem")
	r2 := startSim(t, nil, "--tls", "--tls-ca-out", out, "--token-file", tokenFile)
	if want := "CA certificate in " + out; r2.caLine != want {
		t.Errorf("CA line %q, want %q", r2.caLine, want)
	}
	if _, err := config.LoadCA(out); err != nil {
		t.Errorf("--tls-ca-out: %v", err)
	}
}

// TestSimTLSFlagErrors: contradictory TLS flags exit 2 before serving.
func TestSimTLSFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--tls", "--tls-cert", "c.pem", "--tls-key", "k.pem"},
		{"--tls-cert", "c.pem"},
		{"--tls-key", "k.pem"},
		{"--tls-ca-out", "ca.pem"},
		{"--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"},
	} {
		var stdout, stderr lockedBuffer
		err := runSim(context.Background(), append([]string{"--listen", "127.0.0.1:0"}, args...), func(string) string { return "" }, &stdout, &stderr)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("sim %v: %v, want exit 2", args, err)
		}
	}
}
