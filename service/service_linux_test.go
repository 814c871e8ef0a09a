package service

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	kservice "github.com/kardianos/service"
	"go.uber.org/goleak"
)

// TestSystemdUserUnit installs into a temporary home with kardianos'
// systemd backend and reads back the unit it rendered. systemctl itself
// may be missing or have no user bus here; the unit is written before it
// is called, and that file is what this test checks.
func TestSystemdUserUnit(t *testing.T) {
	var systemd kservice.System
	for _, s := range kservice.AvailableSystems() {
		if s.String() == "linux-systemd" {
			systemd = s
		}
	}
	if systemd == nil {
		t.Fatal("kardianos has no systemd backend")
	}
	prev := kservice.ChosenSystem()
	kservice.ChooseSystem(detected{systemd}) // CI machines run no systemd
	t.Cleanup(func() { kservice.ChooseSystem(prev) })

	home := t.TempDir()
	t.Setenv("HOME", home)
	cfgPath := filepath.Join(home, "spritefwd.yaml")
	os.WriteFile(cfgPath, []byte("forwards: []\n"), 0o600)
	s, err := New(Options{ConfigPath: cfgPath, User: true, Executable: "/opt/spritefwd/bin/spritefwd"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	installErr := s.Install()
	unit, err := os.ReadFile(filepath.Join(home, ".config/systemd/user/spritefwd.service"))
	if err != nil {
		t.Fatalf("no unit written (install: %v): %v", installErr, err)
	}
	text := string(unit)
	for _, want := range []string{
		`ExecStart=/opt/spritefwd/bin/spritefwd "run" "--config" "` + cfgPath + `" "--log-format" "json"` + "\n",
		"Restart=on-failure\n",
		"RestartSec=2\n",
		"ExecReload=/bin/kill -HUP $MAINPID\n",
		"WantedBy=default.target\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("unit lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "--allow-root") || strings.Contains(text, "RestartSec=120") || strings.Contains(text, "multi-user.target") {
		t.Errorf("user unit has system-service settings:\n%s", text)
	}
}

// detected makes a backend usable where its init system is not running.
type detected struct{ kservice.System }

func (detected) Detect() bool { return true }

func TestSystemUnitTemplate(t *testing.T) {
	if u := systemdUnit(false); !strings.Contains(u, "WantedBy=multi-user.target") {
		t.Errorf("system unit: %s", u)
	}
	if a := strings.Join(Args("/etc/spritefwd.yaml", false), " "); !strings.Contains(a, "--allow-root") {
		t.Errorf("system service args %q must allow root", a)
	}
	if _, err := Config(Options{ConfigPath: "/nonexistent/x.yaml"}); err == nil {
		t.Error("a missing config file was accepted at install")
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
