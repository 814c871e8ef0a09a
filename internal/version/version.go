// Package version says which build of spritefwd is running: the version
// and commit a release build stamped in, or else what the Go toolchain
// recorded (the module version for go install, the VCS revision for a
// build in a checkout). The daemon and the agent-only build report it
// alike, so that the daemon can tell an agent of another version.
package version

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// DirtySuffix marks a linked commit built from a tree with uncommitted
// changes: -X main.commit=HASH+dirty.
const DirtySuffix = "+dirty"

// Info describes one build.
type Info struct {
	Version  string // a release version, a Go module (pseudo-)version, or "dev"
	Commit   string // the VCS revision, full or abbreviated; "" when unknown
	Dirty    bool   // built from a tree with uncommitted changes
	Go       string // the toolchain, such as go1.26.8
	Platform string // GOOS/GOARCH
}

// Of returns linked (set with -ldflags "-X main.version=…") if it is set,
// else the module version from the build info, else "dev". It is the
// version daemon and agent compare.
func Of(linked string) string {
	bi, ok := debug.ReadBuildInfo()
	return read(bi, ok, linked, "").Version
}

// Read describes this build: linkedVersion and linkedCommit are what a
// release build set with -ldflags "-X main.version=… -X main.commit=…"
// (the commit may end in DirtySuffix); either may be empty, and then the
// build info fills in what it can.
func Read(linkedVersion, linkedCommit string) Info {
	bi, ok := debug.ReadBuildInfo()
	return read(bi, ok, linkedVersion, linkedCommit)
}

// pseudo matches the end of a Go pseudo-version, v0.0.0-20261130124000-85018ef1a2b3:
// a go install of a commit rather than a tag records only this.
var pseudo = regexp.MustCompile(`[-.](\d{14})-([0-9a-f]{12})(\+incompatible)?$`)

func read(bi *debug.BuildInfo, ok bool, linkedVersion, linkedCommit string) Info {
	i := Info{Version: linkedVersion, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if ok && bi.GoVersion != "" {
		i.Go = bi.GoVersion
	}
	if i.Version == "" && ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		i.Version = bi.Main.Version
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	if linkedCommit != "" {
		i.Commit, i.Dirty = strings.CutSuffix(linkedCommit, DirtySuffix)
		return i
	}
	if ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.modified":
				i.Dirty = s.Value == "true"
			}
		}
	}
	if m := pseudo.FindStringSubmatch(i.Version); i.Commit == "" && m != nil {
		i.Commit = m[2]
	}
	return i
}

// String is the line `spritefwd version` prints after the program's name:
// v1.2.0 (commit 85018ef1a2b3, dirty) go1.26.8 linux/amd64.
func (i Info) String() string {
	var b strings.Builder
	b.WriteString(i.Version)
	switch {
	case i.Commit != "" && i.Dirty:
		b.WriteString(" (commit " + i.Commit + ", dirty)")
	case i.Commit != "":
		b.WriteString(" (commit " + i.Commit + ")")
	case i.Dirty:
		b.WriteString(" (dirty)")
	}
	b.WriteString(" " + i.Go + " " + i.Platform)
	return b.String()
}
