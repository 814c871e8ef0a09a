package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	kservice "github.com/kardianos/service"

	"github.com/spritefwd/spritefwd/config"
	svc "github.com/spritefwd/spritefwd/service"
)

const serviceHelp = `spritefwd service ACTION [--user] [--config FILE]: manage the system service.

ACTION is install, uninstall, start, stop, restart or status.
  --user   a per-user service: a systemd user unit (starts at login) or a
           launchd LaunchAgent. Without it: a system unit, a LaunchDaemon or a
           Windows service.
The service runs 'spritefwd run --config FILE' with JSON logs: on Linux they
go to the journal (journalctl [--user] -u spritefwd), on macOS to
~/Library/Logs/spritefwd.err.log (user) or /var/log/spritefwd.err.log, on
Windows to %ProgramData%\spritefwd\spritefwd.log.
A system service runs as root, so it refuses a config or token file that
anyone but root can change (install checks this too); --user does not.`

func cmdService(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stderr, serviceHelp)
		if len(args) == 0 {
			return &exitError{code: 2}
		}
		return nil
	}
	action := args[0]
	fs := newFlags("service "+action, serviceHelp, stderr)
	user := fs.Bool("user", false, "a per-user service instead of a system one")
	path := fs.String("config", "", "config file for the service to run (install only; made absolute)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if action == "install" && *path == "" {
		return &exitError{code: 2, msg: "service install: --config FILE is required"}
	}
	if action == "install" && !*user && os.Geteuid() == 0 {
		if err := checkServiceFiles(*path); err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("service install: %v", err)}
		}
	}
	if *path == "" {
		*path = os.DevNull // only install renders the config path into the unit
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	s, err := svc.New(svc.Options{ConfigPath: *path, User: *user, Executable: exe}, nil)
	if err != nil {
		return err
	}
	switch action {
	case "status":
		st, err := s.Status()
		if err != nil {
			return &exitError{code: 3, msg: fmt.Sprintf("service: %v", err)}
		}
		fmt.Fprintln(stdout, map[kservice.Status]string{
			kservice.StatusRunning: "running", kservice.StatusStopped: "stopped", kservice.StatusUnknown: "unknown",
		}[st])
		return nil
	case "install", "uninstall", "start", "stop", "restart":
		if err := kservice.Control(s, action); err != nil {
			return fmt.Errorf("service %s: %w", action, err)
		}
	default:
		return &exitError{code: 2, msg: fmt.Sprintf("service: unknown action %q; want install, uninstall, start, stop, restart or status", action)}
	}
	fmt.Fprintf(stdout, "service %s: done\n", action)
	if action == "install" {
		fmt.Fprintln(stdout, "start it with: spritefwd service start"+map[bool]string{true: " --user", false: ""}[*user])
		if *user && runtime.GOOS == "linux" {
			fmt.Fprintln(stdout, "to start it at boot without logging in: loginctl enable-linger "+os.Getenv("USER"))
		}
	}
	return nil
}

// checkServiceFiles makes install fail now, rather than the service at
// its start, over files the root daemon will refuse. The service manager
// passes no $SPRITES_TOKEN, so the token comes from token_file.
func checkServiceFiles(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	cfg, err := config.Load(abs)
	if err != nil {
		return err
	}
	return config.CheckRootFiles(abs, cfg.TokenFile, func(string) string { return "" })
}
