package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/mux"
)

func TestMain(m *testing.M) {
	// The replace tests re-execute this binary as an agent, or as a
	// stranger that happens to run the same executable.
	switch os.Getenv(childRole) {
	case "agent":
		if err := Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, "test"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "idle":
		time.Sleep(time.Minute)
		os.Exit(0)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func TestAllowed(t *testing.T) {
	a, err := New(Options{Secret: mux.NewSecret(), AllowHosts: []string{"db.internal"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{"localhost", true}, {"127.0.0.1", true}, {"127.0.0.53", true}, {"::1", true},
		{"db.internal", true},
		{"10.0.0.1", false}, {"169.254.169.254", false}, {"example.com", false}, {"0.0.0.0", false}, {"", false},
	} {
		err := a.Allowed(tt.host)
		if (err == nil) != tt.ok {
			t.Errorf("Allowed(%q) = %v, want ok=%v", tt.host, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrTargetRefused) {
			t.Errorf("Allowed(%q) = %v, want ErrTargetRefused", tt.host, err)
		}
	}
}

func TestReadSecretRefusesOpenFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(p, []byte(mux.NewSecret()+"\n"), 0o644)
	if _, err := ReadSecret(p, nil); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable secret: %v, want a chmod hint", err)
	}
	os.Chmod(p, 0o600)
	if s, err := ReadSecret(p, nil); err != nil || len(s) != 64 {
		t.Fatalf("ReadSecret = %q, %v", s, err)
	}
	if s, _ := ReadSecret("-", strings.NewReader("abc\n")); s != "abc" {
		t.Fatalf("from stdin: %q", s)
	}
}

// A session with the secret may still only reach loopback: a stream that
// asks for anything else is reset with the reason, and the session and its
// other streams carry on.
func TestAgentRefusesNonLoopbackTargets(t *testing.T) {
	secret := mux.NewSecret()
	a, err := New(Options{Secret: secret, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx, ln); close(done) }()
	defer func() { cancel(); <-done }()

	echo := testsvc.Serve(t, testsvc.Echo)

	client := mux.NewClient(mux.ClientOptions{
		Connect: func(ctx context.Context, h mux.Hello) (*mux.Session, bool, error) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return nil, false, err
			}
			return mux.Dial(ctx, c, secret, h, zerolog.Nop())
		},
		ResumeWindow: time.Second, Log: zerolog.Nop(),
	})
	defer client.Close()
	open := func(host string, port int) (*net.TCPConn, *mux.Stream) {
		t.Helper()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		far, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { far.Close() })
		near, _ := l.Accept()
		st, err := client.Open(context.Background(), near.(*net.TCPConn), host, port, false, mux.StreamOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return far.(*net.TCPConn), st
	}
	_, p, _ := net.SplitHostPort(echo)
	echoPort, _ := strconv.Atoi(p)
	good, _ := open("127.0.0.1", echoPort)
	for _, host := range []string{"10.0.0.1", "example.com", "169.254.169.254"} {
		_, st := open(host, 80)
		<-st.Done()
		if err := st.Err(); !errors.Is(err, mux.ErrPeerReset) || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("stream to %s ended with %v, want a reset saying it is not allowed", host, err)
		}
	}
	good.Write([]byte("still here"))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(good, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("the loopback stream after the refusals: %q %v", buf, err)
	}
}

// Another process holds the agent's port: the agent says so in a line the
// daemon parses, so that the daemon moves to another port.
func TestRunSaysThePortIsHeld(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte(mux.NewSecret()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var out strings.Builder
	err = Run(context.Background(), Args{Listen: held.Addr().String(), SecretFile: secret}, nil, &out, zerolog.Nop(), "test")
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Run on a held port: %v, want EADDRINUSE", err)
	}
	if !ParsePortHeld([]byte(out.String())) {
		t.Fatalf("the agent printed %q, want a port_held line", out.String())
	}
}
