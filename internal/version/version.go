// Package version says which build of spritefwd is running: the version
// the release build stamped in, or else the module version that go install
// recorded. The daemon and the agent-only build report it alike, so that
// the daemon can tell an agent of another version.
package version

import "runtime/debug"

// Of returns linked (set with -ldflags "-X main.version=…") if it is set,
// else the module version from the build info, else "dev".
func Of(linked string) string {
	if linked != "" {
		return linked
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
