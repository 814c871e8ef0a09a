package tunnel

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spritefwd/spritefwd/mux"
)

func testRecord() agentRecord {
	return agentRecord{Version: agentRecordVersion, Sprite: "dev", APIURL: "https://api.sprites.dev", Port: 41414,
		Secret: mux.NewSecret(), Protocol: mux.Version, SHA256: strings.Repeat("ab", 32)}
}

// A record comes back as it was saved, readable by its user alone; saving
// again replaces it whole.
func TestAgentRecordRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if _, ok, err := loadAgentRecord(dir, "dev"); ok || err != nil {
		t.Fatalf("no file: ok %v, err %v; want neither", ok, err)
	}
	want := testRecord()
	if err := saveAgentRecord(dir, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := loadAgentRecord(dir, "dev")
	if err != nil || !ok || got != want {
		t.Fatalf("loaded %+v, %v, %v; want %+v", got, ok, err, want)
	}
	fi, err := os.Stat(agentRecordFile(dir, "dev"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record file mode %v, want 0600: it holds the secret", fi.Mode().Perm())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("state directory mode %v, want 0700", di.Mode().Perm())
	}
	next := testRecord()
	next.SHA256 = ""
	if err := saveAgentRecord(dir, next); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := loadAgentRecord(dir, "dev"); got != next {
		t.Fatalf("after a second save: %+v, want %+v", got, next)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the state directory holds %d files, want the record alone (no temporary file left)", len(entries))
	}
	if err := forgetAgentRecord(dir, "dev"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := loadAgentRecord(dir, "dev"); ok || err != nil {
		t.Fatalf("after forgetting: ok %v, err %v", ok, err)
	}
	if err := forgetAgentRecord(dir, "dev"); err != nil {
		t.Errorf("forgetting a record that is gone: %v", err)
	}
	// No state directory: nothing is kept, and nothing fails.
	if err := saveAgentRecord("", want); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := loadAgentRecord("", "dev"); ok || err != nil {
		t.Fatalf("no state directory: ok %v, err %v", ok, err)
	}
}

// A record that is corrupt, of another version or for another sprite is
// an error, to be logged, and no record.
func TestAgentRecordRejects(t *testing.T) {
	good := testRecord()
	mutate := func(f func(r *agentRecord)) string {
		r := good
		f(&r)
		b, _ := json.Marshal(r)
		return string(b)
	}
	for name, text := range map[string]string{
		"not json":        "{",
		"empty":           "",
		"other version":   mutate(func(r *agentRecord) { r.Version = 2 }),
		"other sprite":    mutate(func(r *agentRecord) { r.Sprite = "prod" }),
		"port 0":          mutate(func(r *agentRecord) { r.Port = 0 }),
		"port too large":  mutate(func(r *agentRecord) { r.Port = 70000 }),
		"no secret":       mutate(func(r *agentRecord) { r.Secret = "" }),
		"short secret":    mutate(func(r *agentRecord) { r.Secret = "abcd" }),
		"secret not hex":  mutate(func(r *agentRecord) { r.Secret = strings.Repeat("z", 64) }),
		"secret injected": mutate(func(r *agentRecord) { r.Secret = strings.Repeat("a", 63) + "\n" }),
		"sha256 not hex":  mutate(func(r *agentRecord) { r.SHA256 = "xyz" }),
		"too large":       strings.Repeat(" ", maxAgentRecord+1) + mutate(func(*agentRecord) {}),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(agentRecordFile(dir, "dev"), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			r, ok, err := loadAgentRecord(dir, "dev")
			if err == nil || ok || r != (agentRecord{}) {
				t.Fatalf("loaded %+v, ok %v, err %v; want an error and no record", r, ok, err)
			}
			if strings.Contains(err.Error(), good.Secret) {
				t.Fatalf("the error quotes the secret: %v", err)
			}
		})
	}
	if _, err := parseAgentRecord([]byte(mutate(func(*agentRecord) {})), "dev"); err != nil {
		t.Fatalf("the good record: %v", err)
	}
}

func FuzzAgentRecord(f *testing.F) {
	b, _ := json.Marshal(testRecord())
	f.Add(b)
	f.Add([]byte(`{"version":1,"sprite":"dev","port":1,"secret":"00"}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseAgentRecord(b, "dev")
		if err != nil {
			return
		}
		if r.Version != agentRecordVersion || r.Sprite != "dev" || r.Port < 1 || r.Port > 65535 ||
			!isHex(r.Secret, 32) || (r.SHA256 != "" && !isHex(r.SHA256, 32)) {
			t.Fatalf("accepted %+v", r)
		}
		// What was accepted survives a save and a load unchanged.
		dir := t.TempDir()
		if err := saveAgentRecord(dir, r); err != nil {
			t.Fatal(err)
		}
		got, ok, err := loadAgentRecord(dir, "dev")
		if err != nil || !ok || got != r {
			t.Fatalf("saved %+v, loaded %+v, %v, %v", r, got, ok, err)
		}
		_ = fmt.Sprint(r)
	})
}
