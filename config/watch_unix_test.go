//go:build unix

package config

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestHashFileBounded: the watcher's hash reads what Load reads, at most
// MaxFileSize+1 bytes, however much the file holds. A pipe counts the
// bytes taken, which a regular file cannot.
func TestHashFileBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip(err)
	}
	const offered = 8 * MaxFileSize
	taken := make(chan int, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			taken <- -1
			return
		}
		defer f.Close()
		n := 0
		chunk := bytes.Repeat([]byte("forwards: []\n"), 1<<10)
		for n < offered {
			m, err := f.Write(chunk)
			n += m
			if err != nil {
				break // the reader closed: it took no more
			}
		}
		taken <- n
	}()
	if h := hashFile(path); h == ([32]byte{}) {
		t.Error("no hash")
	}
	// A pipe holds some bytes the reader never took: 1 MiB of slack.
	if n := <-taken; n < 0 || n > MaxFileSize+1<<20 {
		t.Errorf("hashFile took %d bytes of a file of %d, want at most %d", n, offered, MaxFileSize+1)
	}
}
