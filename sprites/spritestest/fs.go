package spritestest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// rootLocked is the sprite's directory, created on first use. The emulator
// has no file system of its own for a sprite: fs paths and exec working
// directories are resolved inside this directory, so "/tmp/x" means the
// same file to both.
func (s *Server) rootLocked(sp *sprite) (string, error) {
	if sp.root != "" {
		return sp.root, nil
	}
	dir, err := os.MkdirTemp("", "spritestest-"+sp.name+"-")
	if err != nil {
		return "", err
	}
	sp.root = dir
	return dir, nil
}

// resolve maps a path inside the sprite to the real file, for exec, which
// needs a real path. ".." cannot climb above the sprite's directory.
func (s *Server) resolve(sp *sprite, p string) (string, error) {
	s.mu.Lock()
	root, err := s.rootLocked(sp)
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	if p == "" {
		return "", errors.New("path is required")
	}
	clean := filepath.Clean("/" + p)
	return filepath.Join(root, clean), nil
}

// openRoot opens the sprite's directory as an os.Root. The fs endpoints
// work through it, so that neither ".." nor a symbolic link written by a
// command can reach a file outside the sprite.
func (s *Server) openRoot(sp *sprite) (*os.Root, error) {
	s.mu.Lock()
	dir, err := s.rootLocked(sp)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return os.OpenRoot(dir)
}

// fsStart begins a read-only fs call: it wakes the sprite, resolves its
// path and opens the sprite's root, or answers the error itself.
func (s *Server) fsStart(w http.ResponseWriter, r *http.Request, sp *sprite) (string, *os.Root, bool) {
	s.touch(sp)
	p, err := fsPath(r.URL.Query())
	if err != nil {
		fsError(w, http.StatusBadRequest, "", err.Error())
		return "", nil, false
	}
	root, err := s.openRoot(sp)
	if err != nil {
		fsError(w, http.StatusInternalServerError, p, err.Error())
		return "", nil, false
	}
	return p, root, true
}

// fsPath resolves ?path= against ?workingDir=, as the real API does, to an
// absolute, clean path inside the sprite.
func fsPath(q url.Values) (string, error) {
	p := q.Get("path")
	if p == "" {
		return "", errors.New("path is required")
	}
	if !path.IsAbs(p) {
		p = path.Join("/", q.Get("workingDir"), p)
	}
	return path.Clean("/" + p), nil
}

// rel is p for an os.Root: relative, "." for the sprite's "/".
func rel(p string) string {
	if r := strings.TrimPrefix(p, "/"); r != "" {
		return r
	}
	return "."
}

// fsError answers the way the official SDK parses a failed fs call.
func fsError(w http.ResponseWriter, status int, p, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "path": p})
}

// fsStatus maps a failed file operation to a status and a message that
// names the sprite's path, not the host's.
func fsStatus(err error, p string) (int, string) {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return http.StatusNotFound, fmt.Sprintf("%s: no such file or directory", p)
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden, fmt.Sprintf("%s: permission denied", p)
	}
	return http.StatusBadRequest, fmt.Sprintf("%s: %v", p, err)
}

// handleFSWrite stores the request body at ?path= (resolved against
// ?workingDir=) with ?mode= (octal). Parent directories are created only
// with ?mkdirParents=true. It serves PUT, what the official SDK sends and
// where the docs make workingDir required, and POST, what the API
// reference lists, with workingDir optional ("/").
func (s *Server) handleFSWrite(w http.ResponseWriter, r *http.Request, sp *sprite) {
	s.touch(sp)
	q := r.URL.Query()
	if r.Method == http.MethodPut && q.Get("workingDir") == "" {
		fsError(w, http.StatusBadRequest, q.Get("path"), "workingDir is required")
		return
	}
	p, err := fsPath(q)
	if err != nil {
		fsError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	mode := os.FileMode(0o644)
	if m := q.Get("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v > 0o7777 {
			fsError(w, http.StatusBadRequest, p, "mode: want octal, such as 0755")
			return
		}
		mode = os.FileMode(v)
	}
	root, err := s.openRoot(sp)
	if err != nil {
		fsError(w, http.StatusInternalServerError, p, err.Error())
		return
	}
	defer root.Close()
	if q.Get("mkdirParents") == "true" {
		if err := root.MkdirAll(rel(path.Dir(p)), 0o755); err != nil {
			status, msg := fsStatus(err, path.Dir(p))
			fsError(w, status, p, msg)
			return
		}
	} else if fi, err := root.Stat(rel(path.Dir(p))); err != nil || !fi.IsDir() {
		fsError(w, http.StatusBadRequest, p, fmt.Sprintf("parent directory %s does not exist (mkdirParents=true creates it)", path.Dir(p)))
		return
	}
	f, err := root.OpenFile(rel(p), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		status, msg := fsStatus(err, p)
		fsError(w, status, p, msg)
		return
	}
	n, err := io.Copy(f, r.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Chmod(rel(p), mode) // the umask must not change what was asked for
	}
	if err != nil {
		fsError(w, http.StatusInternalServerError, p, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "size": n, "mode": fmt.Sprintf("%04o", mode.Perm())})
}

// handleFSRead returns the file at ?path= (resolved against ?workingDir=).
func (s *Server) handleFSRead(w http.ResponseWriter, r *http.Request, sp *sprite) {
	p, root, ok := s.fsStart(w, r, sp)
	if !ok {
		return
	}
	defer root.Close()
	f, err := root.Open(rel(p))
	if err != nil {
		status, msg := fsStatus(err, p)
		fsError(w, status, p, msg)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		fsError(w, http.StatusInternalServerError, p, err.Error())
		return
	}
	if fi.IsDir() {
		fsError(w, http.StatusBadRequest, p, p+": is a directory")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	io.Copy(w, f)
}

// fsEntry is one entry of fs/list, in the form the official SDK parses.
type fsEntry struct {
	Name    string    `json:"name"`
	Path    string    `json:"path"`
	Type    string    `json:"type"` // "file" or "directory"
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"` // octal, such as "0644"
	ModTime time.Time `json:"modTime"`
	IsDir   bool      `json:"isDir"`
}

func newFSEntry(p string, fi fs.FileInfo) fsEntry {
	e := fsEntry{Name: fi.Name(), Path: p, Type: "file", Size: fi.Size(), Mode: fmt.Sprintf("%04o", fi.Mode().Perm()), ModTime: fi.ModTime(), IsDir: fi.IsDir()}
	if fi.IsDir() {
		e.Type = "directory"
	}
	return e
}

// handleFSList lists the directory at ?path= (resolved against
// ?workingDir=); a file lists as itself, which is how the SDK's Stat
// reads it.
func (s *Server) handleFSList(w http.ResponseWriter, r *http.Request, sp *sprite) {
	p, root, ok := s.fsStart(w, r, sp)
	if !ok {
		return
	}
	defer root.Close()
	fi, err := root.Stat(rel(p))
	if err != nil {
		status, msg := fsStatus(err, p)
		fsError(w, status, p, msg)
		return
	}
	entries := []fsEntry{}
	if !fi.IsDir() {
		entries = append(entries, newFSEntry(p, fi))
	} else {
		des, err := fs.ReadDir(root.FS(), rel(p))
		if err != nil {
			status, msg := fsStatus(err, p)
			fsError(w, status, p, msg)
			return
		}
		for _, de := range des {
			info, err := de.Info()
			if err != nil {
				continue // removed since the directory was read
			}
			entries = append(entries, newFSEntry(path.Join(p, de.Name()), info))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "entries": entries, "count": len(entries)})
}
