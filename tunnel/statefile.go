package tunnel

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
)

// writeStateFile writes v as JSON to path in the state directory dir,
// atomically (a rename: a reader or a crash sees the old file or the new
// one, never half of one) and readable by its user only: the files hold
// a sprite's servers or its agent's secret. CreateTemp makes the file
// 0600 before a byte is in it.
func writeStateFile(dir, path string, v any) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+strings.TrimSuffix(filepath.Base(path), ".json")+"-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
