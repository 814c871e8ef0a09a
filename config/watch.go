package config

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchOptions tunes Watch. Zero values take the defaults.
type WatchOptions struct {
	Debounce time.Duration // wait this long after the last event (default 200ms)
	Poll     time.Duration // also re-read this often, for file systems without events (default 5s)
	// OnError reports a watcher failure; Watch then keeps polling.
	OnError func(error)
	// OnReady, if set, is called once Watch has taken the file's first
	// hash and set up its watch: a change made after that is reported.
	OnReady func()
	// Loaded is the sha256 of the content the caller already applied
	// (Config.Sum). If the file differs from it when Watch starts, that is
	// a change: an edit made between Load and Watch is not lost.
	Loaded [32]byte

	// trace, if set, sees every event and every check, so that tests can
	// tell "looked and found no change" from "has not looked yet".
	trace func(watchStep)
}

// watchStep is one thing Watch did: it received event, or, if checked, it
// hashed the file (to sum) and found it changed or not.
type watchStep struct {
	event   fsnotify.Event
	checked bool
	sum     [32]byte
	changed bool
}

// Watch calls changed whenever the content of the file at path changes,
// until ctx ends. It watches the file's directory, not the file, because
// editors save by renaming a new file over the old one, and Kubernetes swaps
// a symlink; it compares content hashes, so touches and chmods are ignored.
// A poll backs up the events, which network file systems do not deliver.
func Watch(ctx context.Context, path string, opts WatchOptions, changed func()) {
	if opts.Debounce <= 0 {
		opts.Debounce = 200 * time.Millisecond
	}
	if opts.Poll <= 0 {
		opts.Poll = 5 * time.Second
	}
	last := hashFile(path)
	check := func() {
		h := hashFile(path)
		differs := h != last
		if differs {
			last = h
			changed()
		}
		if opts.trace != nil {
			opts.trace(watchStep{checked: true, sum: h, changed: differs})
		}
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(filepath.Dir(path)); err != nil {
			w.Close()
		}
	}
	if err != nil {
		if opts.OnError != nil {
			opts.OnError(err)
		}
	} else {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	poll := time.NewTicker(opts.Poll)
	defer poll.Stop()
	if opts.OnReady != nil {
		opts.OnReady()
	}
	if opts.Loaded != ([32]byte{}) && opts.Loaded != last {
		changed()
	}
	var debounce *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if debounce != nil {
				debounce.Stop()
			}
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if opts.trace != nil {
				opts.trace(watchStep{event: ev})
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			// Any other event in the directory may be our file (through a
			// rename or a symlink swap); the hash decides.
			if debounce == nil {
				debounce = time.NewTimer(opts.Debounce)
			} else {
				debounce.Reset(opts.Debounce)
			}
			fire = debounce.C
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if opts.OnError != nil {
				opts.OnError(err)
			}
		case <-fire:
			fire = nil
			check()
		case <-poll.C:
			check()
		}
	}
}

// hashFile is the content hash of path, or zero if it cannot be read (a
// save in progress); a later event or poll will see the finished file. It
// reads what Load reads, MaxFileSize+1 bytes at most: Load refuses a larger
// file, and the watcher must not read one whole every poll.
func hashFile(path string) [32]byte {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, MaxFileSize+1)); err != nil {
		return sum
	}
	h.Sum(sum[:0])
	return sum
}
