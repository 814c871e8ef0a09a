package config

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// startWatch runs Watch on path until the test ends and returns once it is
// ready. Each change is sent on changes, each of its steps on steps.
func startWatch(t *testing.T, path string, opts WatchOptions) (changes chan struct{}, steps chan watchStep) {
	t.Helper()
	changes, steps = make(chan struct{}, 100), make(chan watchStep, 1000)
	ready := make(chan struct{})
	opts.OnReady = func() { close(ready) }
	opts.trace = func(s watchStep) { steps <- s }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, path, opts, func() { changes <- struct{}{} })
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-done:
		t.Fatal("Watch returned before it was ready")
	}
	return changes, steps
}

// next is the watcher's next step. The limit only turns a hang into a
// failure: a step normally comes within the debounce.
func next(t *testing.T, steps chan watchStep, what string) watchStep {
	t.Helper()
	select {
	case s := <-steps:
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the watcher did nothing for 10 s", what)
		return watchStep{}
	}
}

func TestWatchSeesEditorSaves(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spritefwd.yaml")
	os.WriteFile(path, []byte("forwards: []\n"), 0o600)
	changes, steps := startWatch(t, path, WatchOptions{Debounce: 20 * time.Millisecond, Poll: time.Hour})

	// changedTo waits for the check that sees content. A save may show a
	// half-written file to an earlier check, which may report a change too.
	changedTo := func(what, content string) {
		t.Helper()
		for {
			if s := next(t, steps, what); s.checked && s.sum == sha256.Sum256([]byte(content)) {
				if !s.changed {
					t.Fatalf("%s: the new content was not reported", what)
				}
				break
			}
		}
		for len(changes) > 0 {
			<-changes
		}
	}
	// unchanged waits for events that marks recognise, in order, as the
	// action's, then for the check they lead to, which must find no change.
	unchanged := func(what string, marks ...func(fsnotify.Event) bool) {
		t.Helper()
		s := next(t, steps, what)
		for ; len(marks) > 0 || !s.checked; s = next(t, steps, what) {
			if s.changed {
				t.Fatalf("%s: reported a change", what)
			}
			if len(marks) > 0 && !s.checked && marks[0](s.event) {
				marks = marks[1:]
			}
		}
		if s.changed || len(changes) > 0 {
			t.Fatalf("%s: reported a change", what)
		}
	}

	// Save by rename, as vim and most editors do.
	tmp := filepath.Join(dir, ".spritefwd.yaml.swp")
	os.WriteFile(tmp, []byte("forwards:\n  - 1:a:1\n"), 0o600)
	os.Rename(tmp, path)
	changedTo("rename", "forwards:\n  - 1:a:1\n")
	// Write in place.
	os.WriteFile(path, []byte("forwards:\n  - 2:a:2\n"), 0o600)
	changedTo("write", "forwards:\n  - 2:a:2\n")
	// A new mode, then the same content rewritten without truncating (so
	// that no check can see it half-written): not a change. The mode's
	// event marks where the write's events start.
	os.Chmod(path, 0o644)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("forwards:\n  - 2:a:2\n"))
	f.Close()
	unchanged("touch",
		func(ev fsnotify.Event) bool { return ev.Name == path && ev.Has(fsnotify.Chmod) },
		func(ev fsnotify.Event) bool { return ev.Name == path && ev.Has(fsnotify.Write) })
	// Another file in the directory: not a change.
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("x"), 0o600)
	unchanged("other file", func(ev fsnotify.Event) bool { return ev.Name == other })
}

func TestWatchPollsWithoutEvents(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("a"), 0o600)
	// A debounce longer than the test leaves only the poll to notice.
	changes, _ := startWatch(t, path, WatchOptions{Debounce: time.Hour, Poll: 30 * time.Millisecond})
	os.WriteFile(path, []byte("b"), 0o600)
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("poll never noticed the change")
	}
}

// TestWatchSeesAnEditBeforeItStarted: an edit that lands between Load and
// Watch's first look is a change, not the baseline, so it is applied.
func TestWatchSeesAnEditBeforeItStarted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spritefwd.yaml")
	os.WriteFile(path, []byte("forwards: []\n"), 0o600)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("keepalive: 20s\nforwards: []\n"), 0o600)
	changes, _ := startWatch(t, path, WatchOptions{Poll: time.Hour, Loaded: cfg.Sum})
	select {
	case <-changes:
	case <-time.After(10 * time.Second): // a failure detector, not a timing
		t.Fatal("the edit made before Watch started was never reported")
	}

}
