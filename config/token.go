package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// TokenEnv is the environment variable that, when set, wins over token_file.
const TokenEnv = "SPRITES_TOKEN"

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
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Token{}, fmt.Errorf("no token: set %s or write the token to %s (mode 0600)", TokenEnv, path)
	}
	if err != nil {
		return Token{}, fmt.Errorf("token_file: %w", err)
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

// DefaultPath is where run and validate look without --config:
// $XDG_CONFIG_HOME/spritefwd/config.yaml, or ~/.config/spritefwd/config.yaml.
func DefaultPath() string {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return x + "/spritefwd/config.yaml"
	}
	return ExpandHome("~/.config/spritefwd/config.yaml")
}
