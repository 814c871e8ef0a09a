package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/spritefwd/spritefwd/agent"
)

// cmdAgent is the agent inside the daemon's binary: what the daemon
// uploads when no agent-only build is at hand. Its command line and its
// whole program live in package agent, shared with cmd/spritefwd-agent.
func cmdAgent(args []string, stdout, stderr io.Writer) error {
	err := agent.Main(context.Background(), args, os.Stdin, stdout, stderr, versionString())
	if ue := (*agent.UsageError)(nil); errors.As(err, &ue) {
		return &exitError{code: 2, msg: ue.Error()}
	}
	return err
}
