package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWatchSeesEditorSaves(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spritefwd.yaml")
	os.WriteFile(path, []byte("forwards: []\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, path, WatchOptions{Debounce: 20 * time.Millisecond, Poll: time.Hour}, func() { changed <- struct{}{} })
	}()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(50 * time.Millisecond) // let the watcher start

	expect := func(what string, want bool) {
		t.Helper()
		select {
		case <-changed:
			if !want {
				t.Fatalf("%s: reported a change", what)
			}
		case <-time.After(500 * time.Millisecond):
			if want {
				t.Fatalf("%s: no change reported", what)
			}
		}
	}
	// Save by rename, as vim and most editors do.
	tmp := filepath.Join(dir, ".spritefwd.yaml.swp")
	os.WriteFile(tmp, []byte("forwards:\n  - 1:a:1\n"), 0o600)
	os.Rename(tmp, path)
	expect("rename", true)
	// Write in place.
	os.WriteFile(path, []byte("forwards:\n  - 2:a:2\n"), 0o600)
	expect("write", true)
	// Same content, new mtime and mode: not a change.
	os.WriteFile(path, []byte("forwards:\n  - 2:a:2\n"), 0o600)
	os.Chmod(path, 0o644)
	expect("touch", false)
	// Another file in the directory: not a change.
	os.WriteFile(filepath.Join(dir, "other"), []byte("x"), 0o600)
	expect("other file", false)
}

func TestWatchPollsWithoutEvents(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("a"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 1)
	done := make(chan struct{})
	// A debounce longer than the test leaves only the poll to notice.
	go func() {
		defer close(done)
		Watch(ctx, path, WatchOptions{Debounce: time.Hour, Poll: 30 * time.Millisecond}, func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	}()
	defer func() { cancel(); <-done }()
	time.Sleep(50 * time.Millisecond)
	os.WriteFile(path, []byte("b"), 0o600)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("poll never noticed the change")
	}
}
