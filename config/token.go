package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// TokenEnv is the environment variable that, when set, wins over token_file.
const TokenEnv = "SPRITES_TOKEN"

// maxTokenFile bounds the read of token_file: a token is one short line,
// and a path such as /dev/zero must not eat the daemon's memory.
const maxTokenFile = 4 << 10

// Token is the Sprites API token and where it came from. Its String and
// GoString methods never reveal the value, so it is safe to log by mistake.
type Token struct {
	value   string
	Source  string // "$SPRITES_TOKEN" or the token file's path
	Warning string // set when the token file is readable by group or others
}

// Value returns the secret itself, for the Authorization header only.
func (t Token) Value() string { return t.value }

func (t Token) String() string   { return "[token from " + t.Source + "]" }
func (t Token) GoString() string { return t.String() }

// LoadToken reads the token from $SPRITES_TOKEN or, failing that, from the
// file named by tokenFile ("~/" is expanded).
func LoadToken(tokenFile string, getenv func(string) string) (Token, error) {
	if v := strings.TrimSpace(getenv(TokenEnv)); v != "" {
		return Token{value: v, Source: "$" + TokenEnv}, nil
	}
	path := ExpandHome(tokenFile)
	data, err := readLimited(path, maxTokenFile)
	if errors.Is(err, os.ErrNotExist) {
		return Token{}, fmt.Errorf("no token: set %s or write the token to %s (mode 0600)", TokenEnv, path)
	}
	if err != nil {
		return Token{}, fmt.Errorf("token_file: %w", err)
	}
	if len(data) > maxTokenFile {
		return Token{}, fmt.Errorf("token_file %s is larger than %d bytes; it must hold the token alone", path, maxTokenFile)
	}
	v := strings.TrimSpace(string(data))
	if v == "" {
		return Token{}, fmt.Errorf("token_file %s is empty", path)
	}
	if strings.ContainsAny(v, "\r\n") {
		return Token{}, fmt.Errorf("token_file %s has more than one line; it must hold the token alone", path)
	}
	t := Token{value: v, Source: path}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		t.Warning = fmt.Sprintf("token_file %s is readable by others (mode %#o); run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	return t, nil
}

// readLimited reads at most limit+1 bytes of path, so that a caller can
// tell a file over the limit from one at it.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}

// DefaultPath is where run and validate look without --config:
// $XDG_CONFIG_HOME/spritefwd/config.yaml, or ~/.config/spritefwd/config.yaml.
func DefaultPath() string {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return x + "/spritefwd/config.yaml"
	}
	return ExpandHome("~/.config/spritefwd/config.yaml")
}

// DefaultStateDir is where the daemon keeps what it learns at run time,
// such as auto-forward's ports: $XDG_STATE_HOME/spritefwd, else
// ~/.local/state/spritefwd.
func DefaultStateDir(getenv func(string) string) string {
	if x := getenv("XDG_STATE_HOME"); x != "" {
		return x + "/spritefwd"
	}
	return ExpandHome("~/.local/state/spritefwd")
}
