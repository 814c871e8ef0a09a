package control

import (
	"time"

	"github.com/spritefwd/spritefwd/tunnel"
)

// Forward is one forward's row in status. It is the control API's own
// type, so that its JSON (status --json) changes only when this file does,
// not whenever the engine's structs do.
type Forward struct {
	Name        string    `json:"name"`
	Listen      string    `json:"listen"`
	Addrs       []string  `json:"addrs,omitempty"` // where it really listens; differs for port 0
	Target      string    `json:"target"`
	State       string    `json:"state"` // listening, failed, draining
	BindError   string    `json:"bind_error,omitempty"`
	SpriteState string    `json:"sprite_state"`
	LastWake    time.Time `json:"last_wake,omitzero"`
	Mode        string    `json:"mode"`
	Agent       *Agent    `json:"agent,omitempty"` // mux mode
	// MaxMessage is what is known of the sprite's message limit.
	MaxMessage MaxMessage `json:"max_message"`
	// WarmLinks is how many spare links the sprite holds now (direct mode).
	WarmLinks int `json:"warm_links"`
	// Discovered is set on auto-forwards: the forwards that auto_forward
	// made for a port the sprite listens on.
	Discovered *Discovered `json:"discovered,omitempty"`
	Counters
}

// Discovered is what is known of an auto-forward's server.
type Discovered struct {
	Process string    `json:"process,omitempty"` // its command's name, when known (mux mode)
	PID     int       `json:"pid,omitempty"`
	Since   time.Time `json:"since"`
}

// Counters are a front's connections, traffic and failures.
type Counters struct {
	Open        int64            `json:"open"`
	Lingering   int64            `json:"lingering"`
	Evicted     int64            `json:"lingering_evicted,omitempty"`
	Total       int64            `json:"total"`
	BytesIn     int64            `json:"bytes_in"`
	BytesOut    int64            `json:"bytes_out"`
	Wakes       int64            `json:"wakes"`        // of the sprite
	WakeWait    time.Duration    `json:"wake_wait_ns"` // summed over those wakes
	Errors      map[string]int64 `json:"errors,omitempty"`
	LastError   string           `json:"last_error,omitempty"`
	LastErrorAt time.Time        `json:"last_error_at,omitzero"`
	Resumptions int64            `json:"resumptions,omitempty"`
	// How direct-mode connections got their link: a spare, a fresh dial
	// with no spare at hand, or a fresh dial after the spare failed.
	WarmHits      int64 `json:"warm_hits,omitempty"`
	WarmMisses    int64 `json:"warm_misses,omitempty"`
	WarmFallbacks int64 `json:"warm_fallbacks,omitempty"`
	// ResumeTimes are the latest resumptions' durations, oldest first.
	ResumeTimes []time.Duration `json:"resume_times_ns,omitempty"`
}

// Agent is the agent's part of a mux forward's status.
type Agent struct {
	State    string `json:"state"` // connected, idle, fallback
	Fallback string `json:"fallback,omitempty"`
	// Port is where the agent listens; Moved says why it is not
	// agent_port: what was found there.
	Port        int           `json:"port"`
	Moved       string        `json:"moved,omitempty"`
	Sessions    int64         `json:"sessions"`
	Deploys     int64         `json:"deploys"`
	LastDeploy  time.Duration `json:"last_deploy_ns,omitempty"`
	Streams     int           `json:"streams"`
	Resumptions int64         `json:"resumptions"`
}

// MaxMessage is what is known of a sprite's WebSocket message limit.
type MaxMessage struct {
	Bytes    int       `json:"bytes"` // the largest message links send now
	State    string    `json:"state"`
	Since    time.Time `json:"since,omitzero"`     // when State was learned
	Probes   int64     `json:"probes"`             // probe links opened
	Refusals int64     `json:"refusals,omitempty"` // live links closed with 1009
}

// ForwardsOf converts the engine's status to the public one.
func ForwardsOf(sts []tunnel.Status) []Forward {
	out := make([]Forward, len(sts))
	for i, s := range sts {
		f := Forward{
			Name: s.Name, Listen: s.Listen, Addrs: s.Addrs, Target: s.Target, State: s.State, BindError: s.BindError,
			SpriteState: string(s.SpriteState), LastWake: s.LastWake, Mode: string(s.Mode),
			MaxMessage: MaxMessage{Bytes: s.MaxMessage.Bytes, State: string(s.MaxMessage.State), Since: s.MaxMessage.Since,
				Probes: s.MaxMessage.Probes, Refusals: s.MaxMessage.Refusals},
			WarmLinks: s.WarmLinks, Counters: CountersOf(s.StatsSnapshot),
		}
		if d := s.Discovered; d != nil {
			f.Discovered = &Discovered{Process: d.Process, PID: d.PID, Since: d.Since}
		}
		if a := s.Agent; a != nil {
			f.Agent = &Agent{State: a.State, Fallback: a.Fallback, Port: a.Port, Moved: a.Moved, Sessions: a.Sessions,
				Deploys: a.Deploys, LastDeploy: a.LastDeploy, Streams: a.Streams, Resumptions: a.Resumptions}
		}
		out[i] = f
	}
	return out
}

// CountersOf converts the engine's counters to the public ones.
func CountersOf(s tunnel.StatsSnapshot) Counters {
	return Counters{
		Open: s.Open, Lingering: s.Lingering, Evicted: s.Evicted, Total: s.Total, BytesIn: s.BytesIn, BytesOut: s.BytesOut,
		Wakes: s.Wakes, WakeWait: s.WakeWait, Errors: s.Errors, LastError: s.LastError, LastErrorAt: s.LastErrorAt,
		Resumptions: s.Resumptions, WarmHits: s.WarmHits, WarmMisses: s.WarmMisses, WarmFallbacks: s.WarmFallbacks,
		ResumeTimes: s.ResumeTimes,
	}
}
