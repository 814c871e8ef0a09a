package sprites_test

import (
	"context"
	"errors"
	"testing"

	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// TestCallsReportTheCallersCancel: every kind of call, when its caller
// gives up, returns the caller's error, not a retryable *Error that a
// retry loop would act on. (Exec and the file calls used to report it as a
// handshake timeout.)
func TestCallsReportTheCallersCancel(t *testing.T) {
	e := newEnv(t, spritestest.Options{}, sprites.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, call := range map[string]func() error{
		"dial": func() error { _, err := e.client.Dial(ctx, "db", "localhost", 5432); return err },
		"exec": func() error {
			_, err := e.client.Exec(ctx, "db", sprites.ExecOptions{Cmd: []string{"true"}})
			return err
		},
		"read":  func() error { _, err := e.client.ReadFile(ctx, "db", "/etc/hostname"); return err },
		"get":   func() error { _, err := e.client.Get(ctx, "db"); return err },
		"write": func() error { return e.client.WriteFile(ctx, "db", "/tmp/x", 0o600, nil) },
	} {
		err := call()
		var se *sprites.Error
		if !errors.Is(err, context.Canceled) || errors.As(err, &se) {
			t.Errorf("%s after cancel: %v (%T), want context.Canceled itself", name, err, err)
		}
	}
}
