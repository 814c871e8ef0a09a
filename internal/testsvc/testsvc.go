//go:build unix

// Package testsvc starts real servers (PostgreSQL, OpenSSH's sshd) for
// spritefwd's end-to-end tests, so that tunnels are proven with the programs
// users run rather than with stand-ins. Each server lives for one test and
// binds nothing shared: PostgreSQL listens on a Unix socket only, and sshd
// runs in inetd mode on a listener the test owns.
package testsvc

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Need finds each program, or skips the test. Under CI (CI=true) a missing
// program fails the test instead: the project's scripts must install it.
func Need(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := lookPath(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed; scripts/install-test-deps.sh installs it", p)
			}
			t.Skipf("%s is not installed (run scripts/install-test-deps.sh)", p)
		}
	}
}

// lookPath also searches PostgreSQL's versioned directory, where Debian
// keeps initdb and postgres.
func lookPath(p string) (string, error) {
	if path, err := exec.LookPath(p); err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin"} {
		if path := filepath.Join(dir, p); isExec(path) {
			return path, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + p)
	for i := len(matches) - 1; i >= 0; i-- {
		if isExec(matches[i]) {
			return matches[i], nil
		}
	}
	return "", fmt.Errorf("%s not found", p)
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// Command builds an exec.Cmd for a program found by Need.
func Command(ctx context.Context, t testing.TB, program string, args ...string) *exec.Cmd {
	t.Helper()
	path, err := lookPath(program)
	if err != nil {
		t.Fatal(err)
	}
	return exec.CommandContext(ctx, path, args...)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Postgres is a throwaway PostgreSQL cluster with trust authentication.
type Postgres struct {
	Dir    string // socket directory
	Socket string // path of the Unix socket, for an emulator --map
	Port   int    // also on 127.0.0.1, for an agent inside the emulated sprite
	User   string
}

// StartPostgres initialises and starts a cluster, stopped at cleanup.
// PostgreSQL refuses to run as root, so as root it runs as user postgres.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	Need(t, "initdb", "postgres", "psql")
	dir, err := os.MkdirTemp("", "spritefwd-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cred := asPostgresUser(t, dir)
	data := filepath.Join(dir, "data")
	initdb := Command(context.Background(), t, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	initdb.SysProcAttr = cred
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := FreePort(t)
	srv := Command(context.Background(), t, "postgres", "-D", data, "-k", dir, "-p", strconv.Itoa(port), "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200")
	srv.SysProcAttr = cred
	logf, _ := os.Create(filepath.Join(dir, "postgres.log"))
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			srv.Process.Kill()
			<-done
		}
		logf.Close()
	})
	pg := &Postgres{Dir: dir, Socket: filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port)), Port: port, User: "postgres"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", pg.Socket); err == nil {
			c.Close()
			// The socket accepts before startup completes; psql says when it is ready.
			if out, err := exec.Command(mustLook(t, "psql"), "-h", dir, "-p", strconv.Itoa(port), "-U", "postgres", "-Atc", "select 1").CombinedOutput(); err == nil && string(out) == "1\n" {
				return pg
			}
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("postgres exited:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("postgres did not start in 30s")
		}
	}
}

func mustLook(t testing.TB, p string) string {
	path, err := lookPath(p)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// asPostgresUser returns process credentials for the postgres user when
// running as root, and hands it dir.
func asPostgresUser(t testing.TB, dir string) *syscall.SysProcAttr {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root needs a postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
}

// SSHD is OpenSSH's server in inetd mode: each connection accepted on Addr
// gets its own `sshd -i`, so no port is ever guessed.
type SSHD struct {
	Addr    string
	Key     string // client private key, authorised for the current user
	User    string
	KnownOK []string // ssh options that skip host-key prompts
}

// StartSSHD starts an sshd that accepts the returned key. It needs root,
// because sshd changes user for each session.
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	Need(t, "sshd", "ssh", "ssh-keygen")
	if os.Geteuid() != 0 {
		t.Skip("sshd in inetd mode needs root")
	}
	dir := t.TempDir()
	os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	for _, k := range []string{"host", "client"} {
		out, err := exec.Command(mustLook(t, "ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "client.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	u, _ := user.Current()
	cfg := fmt.Sprintf(`HostKey %s/host
AuthorizedKeysFile %s/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
LogLevel ERROR
Subsystem sftp internal-sftp
`, dir, dir)
	cfgPath := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	sshd := mustLook(t, "sshd")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var procs []*exec.Cmd
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f, err := c.(*net.TCPConn).File()
			c.Close()
			if err != nil {
				continue
			}
			cmd := exec.Command(sshd, "-i", "-f", cfgPath, "-e")
			cmd.Stdin, cmd.Stdout = f, f
			if err := cmd.Start(); err != nil {
				f.Close()
				continue
			}
			f.Close()
			mu.Lock()
			procs = append(procs, cmd)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); cmd.Wait() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, p := range procs {
			p.Process.Kill()
		}
		mu.Unlock()
		wg.Wait()
	})
	return &SSHD{
		Addr: ln.Addr().String(), Key: filepath.Join(dir, "client"), User: u.Username,
		KnownOK: []string{"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"},
	}
}

// SSHArgs returns the options for ssh or scp (port flag style given) to
// reach this server's user through host:port, such as a forward.
func (s *SSHD) SSHArgs(portFlag, host, port string) []string {
	return append([]string{"-i", s.Key, portFlag, port}, s.KnownOK...)
}

// SimMaxMessageEnv names the environment variable that sets the largest
// client message the emulator accepts in end-to-end tests, so that make
// test can run the whole suite against a 1,024-byte server as well as the
// default one, with the daemon's default config both times.
const SimMaxMessageEnv = "SPRITEFWD_SIM_MAX_MESSAGE"

// SimMaxMessage is the emulator's message limit for this run: the value of
// SimMaxMessageEnv, or 0 for the emulator's default.
func SimMaxMessage(t testing.TB) int64 {
	t.Helper()
	v := os.Getenv(SimMaxMessageEnv)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number of bytes", SimMaxMessageEnv, v)
	}
	t.Logf("the emulator reads at most %d bytes per client message (%s)", n, SimMaxMessageEnv)
	return n
}
