package tunnel

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
)

// autoStateVersion is the state file's format. A file of another version
// is set aside with a log line, and the sprite starts with nothing known.
const autoStateVersion = 1

const (
	// maxStateFile bounds what is read of a state file.
	maxStateFile = 1 << 20
	// maxKnownPorts bounds the ports a sprite's state remembers, listening
	// or withdrawn (a withdrawn one keeps its local port for its return).
	maxKnownPorts = 1024
)

// autoState is what the state file holds for one sprite.
type autoState struct {
	Version int             `json:"version"`
	Sprite  string          `json:"sprite"`
	Ports   []autoStatePort `json:"ports"`
}

type autoStatePort struct {
	Port   int    `json:"port"`   // in the sprite
	Local  int    `json:"local"`  // the local port it had
	Name   string `json:"name"`   // the process, when known
	Active bool   `json:"active"` // listening when last seen: gets a listener at start
}

// errStateVersion is a state file of another format.
var errStateVersion = errors.New("state file of another version")

// parseAutoState reads and checks a state file's bytes.
func parseAutoState(b []byte, sprite string) (autoState, error) {
	var st autoState
	if len(b) > maxStateFile {
		return autoState{}, fmt.Errorf("state file over %d bytes", maxStateFile)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return autoState{}, fmt.Errorf("corrupt state file: %w", err)
	}
	if st.Version != autoStateVersion {
		return autoState{}, fmt.Errorf("%w (%d, want %d)", errStateVersion, st.Version, autoStateVersion)
	}
	if st.Sprite != sprite {
		return autoState{}, fmt.Errorf("state file is for sprite %q", st.Sprite)
	}
	if len(st.Ports) > maxKnownPorts {
		return autoState{}, fmt.Errorf("state file lists %d ports (limit %d)", len(st.Ports), maxKnownPorts)
	}
	seen := map[int]bool{}
	for _, p := range st.Ports {
		if p.Port < 1 || p.Port > 65535 || p.Local < 0 || p.Local > 65535 || seen[p.Port] {
			return autoState{}, fmt.Errorf("corrupt state file: port %d, local %d", p.Port, p.Local)
		}
		seen[p.Port] = true
	}
	return st, nil
}

// stateFile is where a sprite's discovered ports are kept: one file per
// sprite, so that sprites never share a write.
func stateFile(dir, sprite string) string {
	return filepath.Join(dir, "auto-"+sprite+".json")
}

// loadAutoState reads a sprite's state file. A missing file is an empty
// state; any other problem is returned with the empty state, to be logged.
func loadAutoState(dir, sprite string) (autoState, error) {
	empty := autoState{Version: autoStateVersion, Sprite: sprite}
	if dir == "" {
		return empty, nil
	}
	b, ok, err := readStateFile(stateFile(dir, sprite), maxStateFile)
	if !ok || err != nil {
		return empty, err
	}
	st, err := parseAutoState(b, sprite)
	if err != nil {
		return empty, err
	}
	return st, nil
}

// saveAutoState writes a sprite's state atomically (a rename), readable
// by its user only: it names the sprite's servers.
func saveAutoState(dir string, st autoState) error {
	if dir == "" {
		return nil
	}
	return writeStateFile(dir, stateFile(dir, st.Sprite), st)
}
