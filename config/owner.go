package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// CheckRootFiles is for a daemon that runs as root, as a system service
// does. Its config says which file root uploads (agent_binary) and to
// which server (api_url), with the token: whoever can change the config or
// the token file can make root read any file and send it anywhere. So both
// must be files only root can change: owned by root, not writable by group
// or others, in directories likewise (up to /), or anyone could swap them.
// configPath may be empty (no config file); the token file is checked only
// when it is where the token comes from ($SPRITES_TOKEN unset).
func CheckRootFiles(configPath, tokenFile string, getenv func(string) string) error {
	var errs []error
	if configPath != "" {
		errs = append(errs, checkRootOwned("config", configPath))
	}
	if getenv(TokenEnv) == "" {
		errs = append(errs, checkRootOwned("token_file", ExpandHome(tokenFile)))
	}
	return errors.Join(errs...)
}

// userService is the other way out: no root, so nothing to gain.
const userService = "or run spritefwd as the user who edits it (spritefwd service install --user)"

// checkRootOwned checks path, after symlinks, and every directory above it.
func checkRootOwned(what, path string) error {
	real, err := filepath.EvalSymlinks(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // the load that follows says what is missing
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	for p, file := real, true; ; p, file = filepath.Dir(p), false {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s %s: %w", what, path, err)
		}
		uid, ok := fileOwner(fi)
		if !ok {
			return nil // no Unix ownership here (Windows)
		}
		// A sticky directory (/tmp) lets no one else rename or remove what
		// root owns in it, so its write bits do not matter.
		sticky := !file && fi.Mode()&os.ModeSticky != 0
		bad := ""
		switch {
		case uid != 0:
			bad = fmt.Sprintf("belongs to uid %d", uid)
		case fi.Mode().Perm()&0o022 != 0 && !sticky:
			bad = fmt.Sprintf("is writable by group or others (mode %#o)", fi.Mode().Perm())
		}
		switch {
		case bad != "" && file:
			return fmt.Errorf("%s %s %s, and spritefwd runs as root: whoever can change it can make root upload any file "+
				"to any server; run chown root:root %s && chmod go-w %s, %s", what, real, bad, real, real, userService)
		case bad != "":
			return fmt.Errorf("%s %s: its directory %s %s, so the file could be replaced, and spritefwd runs as root; "+
				"move the file to a directory only root can change, such as /etc/spritefwd, %s", what, real, p, bad, userService)
		}
		if parent := filepath.Dir(p); parent == p {
			return nil
		}
	}
}
