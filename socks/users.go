package socks

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
)

// LoadUsers reads a file of user:password lines (# starts a comment),
// which must not be readable by others: it holds passwords.
func LoadUsers(path string) (map[string]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("socks_users_file: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("socks_users_file %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("socks_users_file: %w", err)
	}
	users := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, pass, ok := strings.Cut(line, ":")
		if !ok || user == "" || pass == "" || len(user) > 255 || len(pass) > 255 {
			return nil, fmt.Errorf("%s:%d: want user:password, each 1-255 bytes", path, n)
		}
		users[user] = pass
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("socks_users_file %s has no user:password line", path)
	}
	return users, nil
}
