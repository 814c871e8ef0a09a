// Package service installs and runs spritefwd as a system service: a
// systemd unit (user or system), a launchd agent or daemon, or a Windows
// service, through kardianos/service. It ships its own systemd unit, because
// the built-in one waits 120 s between restarts and never starts a user
// unit at login.
package service

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	kservice "github.com/kardianos/service"
)

// Name is the service's name on every platform.
const Name = "spritefwd"

// Options describe one installation.
type Options struct {
	ConfigPath string // resolved to an absolute path, as services have no working directory
	User       bool   // a per-user service (systemd --user, launchd agent) instead of a system one
	Executable string // default: this program
	// RunWait, if set, replaces waiting for SIGINT/SIGTERM in Run: Run
	// calls Start, then RunWait, then Stop. For embedders and tests.
	RunWait func()
}

// Runner is the daemon as a service manager drives it.
type Runner interface {
	Start() error // must return at once; the daemon runs in the background
	Stop() error  // drains within the grace period; never exits the process
}

type program struct{ r Runner }

func (p program) Start(kservice.Service) error { return p.r.Start() }
func (p program) Stop(kservice.Service) error  { return p.r.Stop() }

// Args are the daemon's arguments in the installed service. A system
// service may run as root, which run otherwise refuses.
func Args(configPath string, user bool) []string {
	args := []string{"run", "--config", configPath, "--log-format", "json"}
	if !user {
		args = append(args, "--allow-root")
	}
	if runtime.GOOS == "windows" {
		// A Windows service's stderr goes nowhere.
		args = append(args, "--log-file", filepath.Join(os.Getenv("ProgramData"), "spritefwd", "spritefwd.log"))
	}
	return args
}

// noRunner serves commands that manage the service without running it.
type noRunner struct{}

func (noRunner) Start() error { return nil }
func (noRunner) Stop() error  { return nil }

// Config builds the kardianos configuration for opts.
func Config(opts Options) (*kservice.Config, error) {
	abs, err := filepath.Abs(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("config %s: %w", abs, err)
	}

	kv := kservice.KeyValue{
		"UserService":   opts.User,
		"SystemdScript": systemdUnit(opts.User),
		"Restart":       "on-failure",
		"RunAtLoad":     true,
		"KeepAlive":     true,
		"LogOutput":     false, // JSON on stderr goes to the journal
	}
	if runtime.GOOS == "darwin" {
		if opts.User {
			home, _ := os.UserHomeDir()
			kv["LogDirectory"] = filepath.Join(home, "Library", "Logs")
		} else {
			kv["LogDirectory"] = "/var/log"
		}
	}
	if opts.RunWait != nil {
		kv["RunWait"] = opts.RunWait
	}
	return &kservice.Config{
		Name:        Name,
		DisplayName: "spritefwd",
		Description: "spritefwd: local TCP port forwards into Sprites.dev sprites",
		Executable:  opts.Executable,
		Arguments:   Args(abs, opts.User),
		Option:      kv,
	}, nil
}

// New returns the platform's service for opts, run by r (nil to only
// install, start or stop it).
func New(opts Options, r Runner) (kservice.Service, error) {
	cfg, err := Config(opts)
	if err != nil {
		return nil, err
	}
	if r == nil {
		r = noRunner{}
	}
	return kservice.New(program{r: r}, cfg)
}

// Interactive reports whether the process runs from a terminal rather
// than under a service manager.
func Interactive() bool { return kservice.Interactive() }

// systemdUnit is the unit template, in kardianos' mini template syntax
// ({{Key}}, {{range}}, {{if}}; no dots). A user unit is wanted by
// default.target, so it starts at login; a system unit by multi-user.target.
func systemdUnit(user bool) string {
	wantedBy := "multi-user.target"
	if user {
		wantedBy = "default.target"
	}
	return `[Unit]
Description={{Description}}
Documentation=https://github.com/spritefwd/spritefwd
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=60
StartLimitBurst=10

[Service]
ExecStart={{Path | cmdEscape}}{{range Arguments}} {{. | cmd}}{{end}}
ExecReload=/bin/kill -HUP $MAINPID
{{if UserName}}User={{UserName}}
{{end}}Restart=on-failure
RestartSec=2
# Stop drains connections for shutdown_grace (10 s by default).
TimeoutStopSec=30
NoNewPrivileges=yes
{{range EnvVars}}{{.}}
{{end}}
[Install]
WantedBy=` + wantedBy + "\n"
}
