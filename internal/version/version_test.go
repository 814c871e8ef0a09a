package version

import (
	"runtime/debug"
	"testing"
)

func TestOf(t *testing.T) {
	if got := Of("v1.2.3"); got != "v1.2.3" {
		t.Errorf("Of(v1.2.3) = %q", got)
	}
	// A test binary's main module is "(devel)": nothing recorded.
	if got := Of(""); got != "dev" {
		t.Errorf("Of(\"\") = %q, want dev", got)
	}
}

func TestRead(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "GOOS", Value: "linux"}, {Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "85018ef1a2b3c4d5e6f708192a3b4c5d6e7f8091"
	for _, tt := range []struct {
		name            string
		bi              *debug.BuildInfo // nil: no build info
		version, commit string           // linked with -X
		want            Info
	}{
		{"release build: the linked values win", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "true")},
			"v1.2.0", "0123456789ab", Info{Version: "v1.2.0", Commit: "0123456789ab"}},
		{"release build of a dirty tree", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			"v1.2.0-SNAPSHOT-0123456", "0123456789ab+dirty", Info{Version: "v1.2.0-SNAPSHOT-0123456", Commit: "0123456789ab", Dirty: true}},
		{"go install of a tag: the module version, no commit recorded", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}},
			"", "", Info{Version: "v1.2.0"}},
		{"go install of a commit: the pseudo-version names it", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261130124000-85018ef1a2b3"}},
			"", "", Info{Version: "v0.0.0-20261130124000-85018ef1a2b3", Commit: "85018ef1a2b3"}},
		{"pseudo-version after a tag", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.1-0.20261130124000-85018ef1a2b3"}},
			"", "", Info{Version: "v1.2.1-0.20261130124000-85018ef1a2b3", Commit: "85018ef1a2b3"}},
		{"go build in a checkout: the VCS stamp", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261130124000-85018ef1a2b3+dirty"}, Settings: vcs(rev, "true")},
			"", "", Info{Version: "v0.0.0-20261130124000-85018ef1a2b3+dirty", Commit: rev, Dirty: true}},
		{"go build in a clean checkout", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")},
			"", "", Info{Version: "dev", Commit: rev}},
		{"make build: version linked, commit from VCS", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")},
			"85018ef", "", Info{Version: "85018ef", Commit: rev}},
		{"no build info at all", nil, "", "", Info{Version: "dev"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := read(tt.bi, tt.bi != nil, tt.version, tt.commit)
			if got.Go == "" || got.Platform == "" {
				t.Errorf("Go %q, Platform %q: want both", got.Go, got.Platform)
			}
			got.Go, got.Platform = "", ""
			if got != tt.want {
				t.Errorf("read = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	for _, tt := range []struct {
		i    Info
		want string
	}{
		{Info{Version: "v1.2.0", Commit: "85018ef1a2b3", Go: "go1.26.8", Platform: "linux/amd64"}, "v1.2.0 (commit 85018ef1a2b3) go1.26.8 linux/amd64"},
		{Info{Version: "dev", Commit: "85018ef1a2b3", Dirty: true, Go: "go1.26.8", Platform: "darwin/arm64"}, "dev (commit 85018ef1a2b3, dirty) go1.26.8 darwin/arm64"},
		{Info{Version: "v1.2.0", Go: "go1.26.8", Platform: "windows/amd64"}, "v1.2.0 go1.26.8 windows/amd64"},
	} {
		if got := tt.i.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
