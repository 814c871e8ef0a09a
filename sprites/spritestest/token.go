package spritestest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The emulator's exec runs any command as the user who started it, so its
// token is a key to that user's account on this machine. These helpers
// make a token nobody chose and keep it in a file only that user can read,
// so that it never appears on a command line (where ps shows it) or in a
// README (where everyone knows it).

// MinTokenLen is the shortest token the emulator's command line accepts:
// shorter ones ("dev", "test") can be guessed by anyone on the machine.
const MinTokenLen = 16

// maxTokenFile bounds a token file's read: a token is a line, never 4 KiB.
const maxTokenFile = 4 << 10

// TokenFileName is the name of the file CreateTokenFile writes.
const TokenFileName = "token"

// NewToken returns 32 random bytes, hex-encoded.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make a token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// CheckToken refuses a token that can be guessed or that cannot go in an
// Authorization header.
func CheckToken(tok string) error {
	if len(tok) < MinTokenLen {
		return fmt.Errorf("the token has %d characters; use at least %d random ones, or give none and one is made for you", len(tok), MinTokenLen)
	}
	if strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("the token has spaces or control characters; it must be one line of printable characters")
	}
	return nil
}

// TokenDir is where CreateTokenFile makes its directory when given none:
// $XDG_RUNTIME_DIR, which only its user can enter, or else the system's
// temporary directory.
func TokenDir(getenv func(string) string) string {
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		return d
	}
	return os.TempDir()
}

// CreateTokenFile makes a fresh directory under base (mode 0700, with a
// name nobody can take first) and in it a file holding a new token (mode
// 0600). remove deletes the directory; the token is for this run only.
func CreateTokenFile(base string) (token, path string, remove func(), err error) {
	dir, err := os.MkdirTemp(base, "spritefwd-sim-")
	if err != nil {
		return "", "", nil, fmt.Errorf("make a directory for the token in %s: %w", base, err)
	}
	remove = func() { os.RemoveAll(dir) }
	path = filepath.Join(dir, TokenFileName)
	token, err = NewToken()
	if err == nil {
		err = writeNewFile(path, token)
	}
	if err != nil {
		remove()
		return "", "", nil, err
	}
	return token, path, remove, nil
}

// LoadOrCreateTokenFile reads the token in path or, if there is no such
// file, makes a new token and creates path with it (mode 0600, failing if
// the file appears meanwhile), so that a fixed path gives the same token
// on every run. It refuses a file that others can read or write, or that
// another user owns: they would know, or choose, the token.
func LoadOrCreateTokenFile(path string) (token string, created bool, err error) {
	token, err = readTokenFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return token, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("token file %s: %w", path, err)
	}
	if token, err = NewToken(); err != nil {
		return "", false, err
	}
	if err := writeNewFile(path, token); errors.Is(err, fs.ErrExist) {
		// Another sim made it first: use theirs, with the same checks.
		token, err = readTokenFile(path)
		return token, false, err
	} else if err != nil {
		return "", false, err
	}
	return token, true, nil
}

// writeNewFile creates path with O_EXCL, so that nothing already there (a
// file or a symbolic link someone else planted) is written through.
func writeNewFile(path, token string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create token file: %w", err)
	}
	_, err = f.WriteString(token + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write token file %s: %w", path, err)
	}
	return nil
}

func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s is not a regular file", path)
	}
	if err := checkPrivate(path, fi); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(data) > maxTokenFile {
		return "", fmt.Errorf("token file %s is larger than %d bytes; it must hold the token alone", path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(data))
	if err := CheckToken(tok); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return tok, nil
}
