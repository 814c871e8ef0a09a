//go:build linux

package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// lookup reads what identifies process pid from /proc. A process of
// another user, whose exe the kernel will not show, is an error: it is
// not ours.
func lookup(pid int) (process, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return process{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces and
	// parentheses itself: the fields resume after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return process{}, fmt.Errorf("%s/stat: no command name", dir)
	}
	fields := strings.Fields(string(stat[i+1:]))
	const state, starttime = 3 - 3, 22 - 3 // field numbers of proc(5), from the state on
	if len(fields) <= starttime {
		return process{}, fmt.Errorf("%s/stat: %d fields", dir, len(fields)+2)
	}
	start, err := strconv.ParseUint(fields[starttime], 10, 64)
	if err != nil {
		return process{}, fmt.Errorf("%s/stat: start time: %w", dir, err)
	}
	exe, err := os.Readlink(filepath.Join(dir, "exe"))
	if err != nil {
		return process{}, err
	}
	cwd, err := os.Readlink(filepath.Join(dir, "cwd"))
	if err != nil {
		return process{}, err
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return process{}, err
	}
	if len(cmdline) == 0 {
		return process{}, errors.New(dir + ": no command line (a kernel thread or a zombie)")
	}
	argv := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	return process{PID: pid, Start: start, Exe: exe, Argv: argv, Dir: cwd, state: fields[state]}, nil
}
