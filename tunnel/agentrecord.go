package tunnel

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spritefwd/spritefwd/mux"
)

// agentRecordVersion is the agent record's format. A file of another
// version is ignored with a log line: the daemon looks into the sprite, as
// with no record, and writes its own.
const agentRecordVersion = 1

// maxAgentRecord bounds what is read of an agent record.
const maxAgentRecord = 4 << 10

// agentRecord is what a daemon learned about a sprite's agent, kept on the
// laptop so that the next daemon goes straight to the handshake, with no
// exec to read the secret. The secret is a credential: the file is its
// user's alone, and it is never logged.
type agentRecord struct {
	Version int    `json:"version"`
	Sprite  string `json:"sprite"`
	// APIURL is the API the sprite was reached through: a sprite of the
	// same name behind another API is another sprite.
	APIURL string `json:"api_url"`
	Port   int    `json:"port"`
	Secret string `json:"secret"`
	// Protocol is the hello's version the agent spoke (mux.Version then):
	// a daemon of another one redeploys without trying it.
	Protocol int `json:"protocol"`
	// SHA256 is the agent binary's, when this daemon deployed it; empty
	// when it found the agent running and did not learn which it is.
	SHA256 string `json:"sha256,omitempty"`
}

// parseAgentRecord reads and checks an agent record's bytes.
func parseAgentRecord(b []byte, sprite string) (agentRecord, error) {
	var r agentRecord
	if len(b) > maxAgentRecord {
		return agentRecord{}, fmt.Errorf("agent record over %d bytes", maxAgentRecord)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return agentRecord{}, fmt.Errorf("corrupt agent record: %w", err)
	}
	if r.Version != agentRecordVersion {
		return agentRecord{}, fmt.Errorf("%w (%d, want %d)", errStateVersion, r.Version, agentRecordVersion)
	}
	if r.Sprite != sprite {
		return agentRecord{}, fmt.Errorf("agent record is for sprite %q", r.Sprite)
	}
	if r.Port < 1 || r.Port > 65535 {
		return agentRecord{}, fmt.Errorf("corrupt agent record: port %d", r.Port)
	}
	// A secret travels to the look's shell and into a file in the sprite:
	// it is what mux.NewSecret makes, nothing else.
	if !isHex(r.Secret, len(mux.NewSecret())/2) {
		return agentRecord{}, errors.New("corrupt agent record: the secret is not 64 hex digits")
	}
	if r.SHA256 != "" && !isHex(r.SHA256, 32) {
		return agentRecord{}, errors.New("corrupt agent record: sha256 is not 64 hex digits")
	}
	return r, nil
}

// agentRecordFile is where a sprite's agent record is kept: one file per
// sprite, beside auto-forward's.
func agentRecordFile(dir, sprite string) string {
	return filepath.Join(dir, "agent-"+sprite+".json")
}

// loadAgentRecord reads a sprite's agent record. No file (or no state
// directory) is ok with no record; any other problem is returned, to be
// logged, and the daemon carries on as if there were none.
func loadAgentRecord(dir, sprite string) (agentRecord, bool, error) {
	if dir == "" {
		return agentRecord{}, false, nil
	}
	b, ok, err := readStateFile(agentRecordFile(dir, sprite), maxAgentRecord)
	if !ok || err != nil {
		return agentRecord{}, false, err
	}
	r, err := parseAgentRecord(b, sprite)
	if err != nil {
		return agentRecord{}, false, err
	}
	return r, true, nil
}

// saveAgentRecord writes a sprite's agent record atomically (a rename),
// readable and writable by its user only, since it holds the secret.
func saveAgentRecord(dir string, r agentRecord) error {
	if dir == "" {
		return nil
	}
	return writeStateFile(dir, agentRecordFile(dir, r.Sprite), r)
}

// forgetAgentRecord removes a sprite's agent record, once it proved
// wrong, so that the next daemon does not try it first.
func forgetAgentRecord(dir, sprite string) error {
	if dir == "" {
		return nil
	}
	err := os.Remove(agentRecordFile(dir, sprite))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
