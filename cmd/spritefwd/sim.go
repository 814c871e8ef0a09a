package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

const simHelp = `spritefwd sim [flags]: run the Sprites API emulator.

Serves the parts of the Sprites API that spritefwd uses (sprite CRUD, the
proxy WebSocket, the exec WebSocket without tty, fs/write and fs/read) and
fails the way the real service does: sprites sleep when idle, cut their
links on sleep and take time to wake. Each --map creates a sprite and routes
one of its ports to a real server on this machine. Exec runs commands as
local processes; each sprite gets its own directory, in which fs paths and
exec working directories are resolved. A port that such a process listens
on (on this machine's loopback: the emulated sprite shares its network) is
reachable through the proxy, which is how a mux agent works here. Sleep
stops a sprite's processes (SIGSTOP) and a wake continues them.
Point spritefwd at it with api_url: http://LISTEN.

Admin endpoints (same Bearer token; they never wake a sprite):
  POST /_sim/sprites/NAME/sleep        put NAME to sleep now
  POST /_sim/sprites/NAME/drop-links   cut NAME's links without a close frame
  GET  /_sim/sprites/NAME              counters: state, wakes, proxy_connects, ...
  POST /_sim/faults                    {"cold_proxy":"fail","latency":"50ms","drop_rate":0.1}
  POST /_sim/offline?on=true|false     drop every API request and link, as a dead network does
  GET  /_sim/tls                       TLS handshakes served: {"full":N,"resumed":M}

With --tls, sim serves https: it makes a CA and a certificate it signs for
127.0.0.1, ::1 and localhost, and writes the CA certificate to --tls-ca-out
(default: a new private file, removed when sim exits). Give that file to
spritefwd as ca_file (or $SSL_CERT_FILE): the daemon then verifies the
emulator as it does the real API, and resumes TLS sessions as there. With
--tls-cert and --tls-key, sim serves that certificate instead.

Exec runs any command it is sent as the user who started sim, on this
machine: whoever has the token can act as that user. So the token is never
a flag (ps shows flags to every user). With --token-file FILE, sim accepts
the token in FILE, or makes a random one there (mode 0600) if FILE does not
exist, and refuses a FILE others can read or write; else it takes
$SPRITEFWD_SIM_TOKEN; else it makes a random token in a new private file
that is removed when sim exits. Tokens shorter than 16 characters are
refused. Give the file to spritefwd as token_file or --token-file.

When ready it prints two lines: "spritefwd sim: serving http://HOST:PORT",
then "spritefwd sim: token in FILE" (or "token from $SPRITEFWD_SIM_TOKEN").
With --tls, the first says https, and a third follows:
"spritefwd sim: CA certificate in FILE".`

// simTokenEnv holds the emulator's token. It is not $SPRITES_TOKEN on
// purpose: that one often holds the user's real API token, which must not
// become a key to run commands on this machine.
const simTokenEnv = "SPRITEFWD_SIM_TOKEN"

// mapFlags collects repeated --map values.
type mapFlags []string

func (m *mapFlags) String() string     { return strings.Join(*m, ",") }
func (m *mapFlags) Set(v string) error { *m = append(*m, v); return nil }

// simFlags registers every emulator option on fs.
func simFlags(fs *flag.FlagSet, o *spritestest.Options) (coldProxy, targetEOF *string) {
	fs.DurationVar(&o.IdleSleep, "idle-sleep", spritestest.DefaultIdleSleep, "a sprite sleeps after this long without activity (negative: never)")
	fs.DurationVar(&o.ColdAfter, "cold-after", 0, "a sleeping sprite is warm this long before it turns cold (0: straight to cold)")
	fs.DurationVar(&o.WakeDelay, "wake-delay", spritestest.DefaultWakeDelay, "how long a wake takes (the real service: 1-12s cold)")
	fs.DurationVar(&o.MaxWait, "max-wait", spritestest.DefaultMaxWait, "with --cold-proxy block: how long a connect is held before 503")
	fs.BoolVar(&o.LinksKeepAwake, "links-keep-awake", false, "count every open proxy WebSocket as activity, as the protocol notes say the real server does (default: only traffic and pings)")
	fs.Int64Var(&o.MaxMessage, "max-message", spritestest.DefaultMaxMessage, "largest client message accepted; larger ones close the link with 1009")
	fs.DurationVar(&o.Latency, "latency", 0, "one-way delay added to every message (100ms gives a 200ms round trip)")
	fs.Float64Var(&o.DropRate, "drop-rate", 0, "chance per second that each link is cut")
	coldProxy = fs.String("cold-proxy", string(spritestest.ColdBlock), "what a proxy connect sees while its sprite wakes: block, fail (503) or drop (cut after upgrade)")
	targetEOF = fs.String("target-eof", string(spritestest.EOFKeepOpen), "what a link does when the server inside closes: keep-open, drop or close (1000)")
	return coldProxy, targetEOF
}

func checkSimModes(o *spritestest.Options, coldProxy, targetEOF string) error {
	switch spritestest.ColdProxy(coldProxy) {
	case spritestest.ColdBlock, spritestest.ColdFail, spritestest.ColdDrop:
		o.ColdProxy = spritestest.ColdProxy(coldProxy)
	default:
		return fmt.Errorf("--cold-proxy %q: want block, fail or drop", coldProxy)
	}
	switch spritestest.TargetEOF(targetEOF) {
	case spritestest.EOFKeepOpen, spritestest.EOFDrop, spritestest.EOFClose:
		o.TargetEOF = spritestest.TargetEOF(targetEOF)
	default:
		return fmt.Errorf("--target-eof %q: want keep-open, drop or close", targetEOF)
	}
	return nil
}

func cmdSim(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runSim(ctx, args, os.Getenv, stdout, stderr)
}

// runSim serves the emulator until ctx ends.
func runSim(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("sim", simHelp, stderr)
	listen := fs.String("listen", "127.0.0.1:7070", "address to serve on")
	allowPublic := fs.Bool("allow-public", false, "allow a non-loopback --listen")
	tokenFile := fs.String("token-file", "", "file holding the token to accept, made with a random token (mode 0600) if missing (default: $"+simTokenEnv+", else a new random token in a private file)")
	tokenFlag := false
	fs.Func("token", "refused: ps shows the command line to every user; use --token-file", func(string) error { tokenFlag = true; return nil })
	var maps mapFlags
	fs.Var(&maps, "map", "NAME:PORT=HOST:PORT (or NAME:PORT=unix:/path): route PORT in sprite NAME to a real server; repeatable")
	var o spritestest.Options
	coldProxy, targetEOF := simFlags(fs, &o)
	genTLS := fs.Bool("tls", false, "serve https with a generated certificate; its CA goes to --tls-ca-out")
	caOut := fs.String("tls-ca-out", "", "with --tls: write the CA certificate here (default: a new private file, removed on exit)")
	certFile := fs.String("tls-cert", "", "serve https with this certificate (PEM; with --tls-key)")
	keyFile := fs.String("tls-key", "", "the private key of --tls-cert (PEM)")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkTLSFlags(*genTLS, *caOut, *certFile, *keyFile); err != nil {
		return &exitError{code: 2, msg: "sim: " + err.Error()}
	}
	if tokenFlag {
		return &exitError{code: 2, msg: "sim: --token is refused: ps shows the command line, and so the token, to every user on this machine, who could then run commands as you through exec. Put the token in a file only you can read and pass --token-file FILE, or set $" + simTokenEnv + ", or give neither and sim makes one"}
	}
	if err := checkSimModes(&o, *coldProxy, *targetEOF); err != nil {
		return &exitError{code: 2, msg: err.Error()}
	}
	token, tokenSource, removeToken, err := simToken(*tokenFile, getenv)
	if err != nil {
		return &exitError{code: 2, msg: "sim: " + err.Error()}
	}
	defer removeToken()
	o.Token = token
	log, err := lf.logger(os.Stderr)
	if err != nil {
		return err
	}
	o.Logger = &log
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return &exitError{code: 2, msg: fmt.Sprintf("--listen %q: %v", *listen, err)}
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) && !*allowPublic {
		return &exitError{code: 2, msg: fmt.Sprintf("--listen %q is not loopback; add --allow-public if you mean it", *listen)}
	}
	sim := spritestest.New(o)
	for _, m := range maps {
		name, port, target, err := spritestest.ParseMap(m)
		if err != nil {
			return &exitError{code: 2, msg: err.Error()}
		}
		sim.Map(name, port, target)
	}
	cert, caPath, removeCA, err := simCertificate(*genTLS, *caOut, *certFile, *keyFile, getenv)
	if err != nil {
		return &exitError{code: 2, msg: "sim: " + err.Error()}
	}
	defer removeCA()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if cert != nil {
		sim.StartTLS(ln, *cert)
	} else {
		sim.Start(ln)
	}
	defer sim.Close()
	fmt.Fprintf(stdout, "spritefwd sim: serving %s\n", sim.URL)
	fmt.Fprintf(stdout, "spritefwd sim: %s\n", tokenSource)
	if caPath != "" {
		fmt.Fprintf(stdout, "spritefwd sim: CA certificate in %s\n", caPath)
	}
	if getenv(config.TokenEnv) != "" && getenv(simTokenEnv) == "" {
		fmt.Fprintf(stderr, "spritefwd sim: $%s is not the emulator's token; give spritefwd the %s\n", config.TokenEnv, tokenSource)
	}
	<-ctx.Done()
	return nil
}

func checkTLSFlags(gen bool, caOut, certFile, keyFile string) error {
	switch {
	case gen && (certFile != "" || keyFile != ""):
		return errors.New("--tls makes its own certificate; give either --tls or --tls-cert with --tls-key")
	case (certFile == "") != (keyFile == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case caOut != "" && !gen:
		return errors.New("--tls-ca-out needs --tls")
	}
	return nil
}

// simCertificate is the certificate sim serves, or nil for plain http.
// With gen, it is made here and its CA written to caOut, or else to a new
// private file that remove deletes; caPath says where.
func simCertificate(gen bool, caOut, certFile, keyFile string, getenv func(string) string) (cert *tls.Certificate, caPath string, remove func(), err error) {
	remove = func() {}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(config.ExpandHome(certFile), config.ExpandHome(keyFile))
		if err != nil {
			return nil, "", nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		return &c, "", remove, nil
	}
	if !gen {
		return nil, "", remove, nil
	}
	caPEM, c, err := spritestest.NewCertificates()
	if err != nil {
		return nil, "", nil, fmt.Errorf("--tls: %w", err)
	}
	if caOut != "" {
		caPath = config.ExpandHome(caOut)
	} else {
		dir, err := os.MkdirTemp(spritestest.TokenDir(getenv), "spritefwd-sim-ca-")
		if err != nil {
			return nil, "", nil, fmt.Errorf("--tls: a directory for the CA certificate: %w", err)
		}
		remove = func() { os.RemoveAll(dir) }
		caPath = filepath.Join(dir, "ca.pem")
	}
	// A certificate is public, but 0600 like the token: nobody else needs it.
	if err := os.WriteFile(caPath, caPEM, 0o600); err != nil {
		remove()
		return nil, "", nil, fmt.Errorf("--tls-ca-out: %w", err)
	}
	return &c, caPath, remove, nil
}

// simToken finds the emulator's token: in --token-file (made there if
// missing), in $SPRITEFWD_SIM_TOKEN, or new in a private file that remove
// deletes. source says where, without the token itself.
func simToken(tokenFile string, getenv func(string) string) (token, source string, remove func(), err error) {
	remove = func() {}
	switch {
	case tokenFile != "":
		path := config.ExpandHome(tokenFile)
		token, created, err := spritestest.LoadOrCreateTokenFile(path)
		if err != nil {
			return "", "", nil, fmt.Errorf("--token-file: %w", err)
		}
		source = "token in " + path
		if created {
			source += " (new)"
		}
		return token, source, remove, nil
	case getenv(simTokenEnv) != "":
		token = strings.TrimSpace(getenv(simTokenEnv))
		if err := spritestest.CheckToken(token); err != nil {
			return "", "", nil, fmt.Errorf("$%s: %w", simTokenEnv, err)
		}
		return token, "token from $" + simTokenEnv, remove, nil
	}
	token, path, remove, err := spritestest.CreateTokenFile(spritestest.TokenDir(getenv))
	if err != nil {
		return "", "", nil, fmt.Errorf("%w; set $XDG_RUNTIME_DIR or $TMPDIR to a directory you can write, or pass --token-file", err)
	}
	return token, "token in " + path, remove, nil
}
