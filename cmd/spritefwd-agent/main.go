// Command spritefwd-agent is the in-sprite side of mode: mux without the
// rest of the daemon: the packages agent and mux and what they need, a
// fraction of the daemon's size, which the daemon uploads on every deploy.
// It takes the daemon's argv for its agent subcommand, "agent" included.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/spritefwd/spritefwd/agent"
	buildversion "github.com/spritefwd/spritefwd/internal/version"
)

// version and commit are set by the Makefile and GoReleaser (-X
// main.version, -X main.commit), as the daemon's are.
var version, commit string

func versionString() string { return buildversion.Of(version) }

func main() {
	args := os.Args[1:]
	if len(args) == 1 && (args[0] == "version" || args[0] == "--version") {
		fmt.Println("spritefwd-agent", buildversion.Read(version, commit))
		return
	}
	err := agent.Main(context.Background(), args, os.Stdin, os.Stdout, os.Stderr, versionString())
	var ue *agent.UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, ue)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "spritefwd-agent:", err)
		os.Exit(1)
	}
}
