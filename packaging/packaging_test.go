package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/spritefwd/spritefwd/service"
	"go.yaml.in/yaml/v3"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type content struct {
	Src      string `yaml:"src"`
	Dst      string `yaml:"dst"`
	Packager string `yaml:"packager"`
	Expand   bool   `yaml:"expand"`
}

// pkg is what both files say about a package.
type pkg struct {
	Section     string            `yaml:"section"`
	Priority    string            `yaml:"priority"`
	Maintainer  string            `yaml:"maintainer"`
	Description string            `yaml:"description"`
	Homepage    string            `yaml:"homepage"`
	Contents    []content         `yaml:"contents"`
	Scripts     map[string]string `yaml:"scripts"`
	Depends     []string          `yaml:"depends"`
	Recommends  []string          `yaml:"recommends"`
}

type goreleaser struct {
	Builds []struct {
		ID     string   `yaml:"id"`
		Binary string   `yaml:"binary"`
		Goos   []string `yaml:"goos"`
	} `yaml:"builds"`
	Nfpms []struct {
		pkg     `yaml:",inline"`
		IDs     []string `yaml:"ids"`
		Bindir  string   `yaml:"bindir"`
		Formats []string `yaml:"formats"`
	} `yaml:"nfpms"`
}

func load(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The released packages (GoReleaser) and the tested one (nfpm CLI) are the
// same package: same metadata, files and scripts; the binaries nfpm.yaml
// takes from bin/package/ are the ones GoReleaser's builds put in bindir.
func TestGoReleaserMirrorsNfpm(t *testing.T) {
	var nf pkg
	load(t, "nfpm.yaml", &nf)
	var gr goreleaser
	load(t, "../.goreleaser.yaml", &gr)
	if len(gr.Nfpms) != 1 {
		t.Fatalf(".goreleaser.yaml has %d nfpms, want 1", len(gr.Nfpms))
	}
	g := gr.Nfpms[0]
	var binaries []string // nfpm.yaml's binaries, as GoReleaser would name them
	var files []content
	for _, c := range nf.Contents {
		if strings.HasPrefix(c.Src, "bin/package/") {
			binaries = append(binaries, c.Dst)
			continue
		}
		files = append(files, c)
	}
	if !reflect.DeepEqual(files, g.Contents) {
		t.Errorf("contents differ:\nnfpm.yaml:       %+v\n.goreleaser.yaml: %+v", files, g.Contents)
	}
	g.pkg.Contents, nf.Contents = nil, nil
	if !reflect.DeepEqual(nf, g.pkg) {
		t.Errorf("metadata or scripts differ:\nnfpm.yaml:       %+v\n.goreleaser.yaml: %+v", nf, g.pkg)
	}
	var built []string
	for _, id := range g.IDs {
		for _, b := range gr.Builds {
			if b.ID == id {
				built = append(built, g.Bindir+"/"+strings.ReplaceAll(b.Binary, "{{ .Arch }}", "${GOARCH}"))
			}
		}
	}
	if !reflect.DeepEqual(binaries, built) {
		t.Errorf("binaries: nfpm.yaml installs %v, GoReleaser's builds %v", binaries, built)
	}
	if !reflect.DeepEqual(g.Formats, []string{"deb", "rpm"}) {
		t.Errorf("formats %v", g.Formats)
	}
}

// Every file the packages take from the repository exists (completions/
// is generated: scripts/completions.sh), and the maintainer scripts parse.
func TestSourcesExist(t *testing.T) {
	var nf pkg
	load(t, "nfpm.yaml", &nf)
	for _, c := range nf.Contents {
		if strings.HasPrefix(c.Src, "bin/") || strings.HasPrefix(c.Src, "completions/") {
			continue
		}
		if m, _ := filepath.Glob(filepath.Join("..", c.Src)); len(m) == 0 {
			t.Errorf("%s: no such file", c.Src)
		}
	}
	for _, s := range nf.Scripts {
		fi, err := os.Stat(filepath.Join("..", s))
		if err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s: %v, mode %v; want an executable script", s, err, fi.Mode())
			continue
		}
		if out, err := exec.Command("sh", "-n", filepath.Join("..", s)).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", s, err, out)
		}
	}
}

// The packaged units run the daemon as the unit `spritefwd service
// install` writes does (package service renders that one): the same
// [Unit], [Service] and [Install] settings, but for the command line,
// whose paths the package fixes.
func TestUnitsMatchServiceInstall(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("forwards: []\n"), 0o600)
	for file, user := range map[string]bool{"spritefwd.service": false, "spritefwd-user.service": true} {
		c, err := service.Config(service.Options{ConfigPath: cfg, User: user, Executable: "/usr/bin/spritefwd"})
		if err != nil {
			t.Fatal(err)
		}
		tmpl, _ := c.Option["SystemdScript"].(string)
		packaged, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		tmpl = strings.ReplaceAll(tmpl, "{{Description}}", c.Description)
		want, got := settings(tmpl), settings(string(packaged))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s has settings\n%q\nservice install writes\n%q", file, got, want)
		}
		unit := strings.NewReplacer("/etc/spritefwd/config.yaml", "CONFIG", "%E/spritefwd/config.yaml", "CONFIG").Replace(string(packaged))
		execStart := "ExecStart=/usr/bin/spritefwd " + strings.Join(service.Args("CONFIG", user), " ")
		if !strings.Contains(unit, "\n"+execStart+"\n") {
			t.Errorf("%s does not say %s", file, execStart)
		}
	}
}

// settings are a unit's lines but comments, ExecStart and the lines
// kardianos fills in (User, environment).
func settings(unit string) []string {
	var out []string
	for _, l := range strings.Split(unit, "\n") {
		l = strings.TrimPrefix(strings.TrimSpace(l), "{{end}}")
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "ExecStart=") || strings.Contains(l, "{{") {
			continue
		}
		out = append(out, l)
	}
	return out
}
