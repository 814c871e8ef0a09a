package control

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/tunnel"
)

// TestForwardJSON pins the public JSON of a forward's status: the keys
// scripts read from status --json, whatever the engine's structs become.
func TestForwardJSON(t *testing.T) {
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	st := tunnel.Status{
		Name: "db", Listen: "127.0.0.1:0", Addrs: []string{"127.0.0.1:5432"}, Target: "db:5432", State: tunnel.StateListening,
		BindError: "b", SpriteState: tunnel.StateRunning, LastWake: at, Mode: config.Mux,
		Agent:      &tunnel.AgentStatus{State: "connected", Fallback: "f", Port: 7022, Moved: "m", Sessions: 1, Deploys: 2, LastDeploy: 3, Streams: 4, Resumptions: 5},
		MaxMessage: sprites.MessageLimit{Bytes: 1024, State: sprites.LimitRefused, Since: at, Probes: 1, Refusals: 2}, WarmLinks: 12,
		StatsSnapshot: tunnel.StatsSnapshot{Open: 1, Lingering: 2, Evicted: 3, Total: 4, BytesIn: 5, BytesOut: 6, Wakes: 7, WakeWait: 8,
			Errors: map[string]int64{"refused": 9}, LastError: "e", LastErrorAt: at, Resumptions: 10, ResumeTimes: []time.Duration{11},
			WarmHits: 13, WarmMisses: 14, WarmFallbacks: 15},
	}
	b, err := json.Marshal(ForwardsOf([]tunnel.Status{st})[0])
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"name":"db","listen":"127.0.0.1:0","addrs":["127.0.0.1:5432"],"target":"db:5432","state":"listening","bind_error":"b",` +
		`"sprite_state":"running","last_wake":"2026-11-30T12:00:00Z","mode":"mux",` +
		`"agent":{"state":"connected","fallback":"f","port":7022,"moved":"m","sessions":1,"deploys":2,"last_deploy_ns":3,"streams":4,"resumptions":5},` +
		`"max_message":{"bytes":1024,"state":"refused","since":"2026-11-30T12:00:00Z","probes":1,"refusals":2},"warm_links":12,` +
		`"open":1,"lingering":2,"lingering_evicted":3,"total":4,"bytes_in":5,"bytes_out":6,"wakes":7,"wake_wait_ns":8,` +
		`"errors":{"refused":9},"last_error":"e","last_error_at":"2026-11-30T12:00:00Z","resumptions":10,"warm_hits":13,"warm_misses":14,"warm_fallbacks":15,"resume_times_ns":[11]}`
	if string(b) != want {
		t.Errorf("status JSON changed:\n got %s\nwant %s", b, want)
	}
}
