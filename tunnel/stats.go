package tunnel

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spritefwd/spritefwd/sprites"
)

// Stats counts one forward's traffic and failures. Safe for concurrent use.
type Stats struct {
	Open, Total       atomic.Int64
	Lingering         atomic.Int64 // client closed its side; waiting out the sprite's last bytes
	Evicted           atomic.Int64 // lingering connections reset to make room under max_connections
	BytesIn, BytesOut atomic.Int64 // into the sprite, out of the sprite

	Resumptions atomic.Int64 // mux streams moved to a new link

	// Direct-mode connections begun on a spare link that answered in time
	// (hits), on a fresh link because none was at hand (misses), or on a
	// fresh link after the spare failed or was late (fallbacks).
	WarmHits, WarmMisses, WarmFallbacks atomic.Int64

	mu        sync.Mutex
	errors    map[string]int64
	lastErr   string
	lastErrAt time.Time
	resumes   []time.Duration // the most recent resumptions' durations
}

// recentResumes bounds the durations kept for status.
const recentResumes = 10

func (s *Stats) recordResume(took time.Duration) {
	s.Resumptions.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.resumes) == recentResumes {
		s.resumes = s.resumes[1:]
	}
	s.resumes = append(s.resumes, took)
}

// Error classes, as counted in status and metrics.
const (
	ClassAuth        = "auth"
	ClassNotFound    = "not_found"
	ClassBadRequest  = "bad_request"
	ClassRefused     = "refused"
	ClassWakeTimeout = "wake_timeout"
	ClassLinkBroken  = "link_broken"
	ClassTooBig      = "message_too_big"
	ClassPingTimeout = "ping_timeout"
	ClassLimit       = "max_connections"
	ClassTLS         = "tls"
	ClassOther       = "other"
)

// ErrorClass names the class of a connection failure.
func ErrorClass(err error) string {
	switch {
	case errors.Is(err, sprites.ErrUnauthorized):
		return ClassAuth
	case errors.Is(err, sprites.ErrNotFound):
		return ClassNotFound
	case errors.Is(err, sprites.ErrTLS):
		return ClassTLS
	case errors.Is(err, ErrNothingListening), sprites.IsRefused(err):
		return ClassRefused
	case errors.Is(err, ErrWakeTimeout):
		return ClassWakeTimeout
	case errors.Is(err, ErrLinkDead):
		return ClassPingTimeout
	case errors.Is(err, sprites.ErrMessageTooBig):
		return ClassTooBig
	case errors.Is(err, errTooManyConnections):
		return ClassLimit
	case sprites.IsPermanent(err):
		return ClassBadRequest
	}
	return ClassOther
}

func (s *Stats) recordError(class string, err error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errors == nil {
		s.errors = map[string]int64{}
	}
	s.errors[class]++
	s.lastErr = err.Error()
	s.lastErrAt = now
}

// StatsSnapshot is a point-in-time copy of Stats.
type StatsSnapshot struct {
	Open          int64            `json:"open"`
	Lingering     int64            `json:"lingering"`
	Evicted       int64            `json:"lingering_evicted,omitempty"`
	Total         int64            `json:"total"`
	BytesIn       int64            `json:"bytes_in"`
	BytesOut      int64            `json:"bytes_out"`
	Wakes         int64            `json:"wakes"`        // of the forward's sprite
	WakeWait      time.Duration    `json:"wake_wait_ns"` // summed over those wakes
	Errors        map[string]int64 `json:"errors,omitempty"`
	LastError     string           `json:"last_error,omitempty"`
	LastErrorAt   time.Time        `json:"last_error_at,omitzero"`
	Resumptions   int64            `json:"resumptions,omitempty"`
	WarmHits      int64            `json:"warm_hits,omitempty"`
	WarmMisses    int64            `json:"warm_misses,omitempty"`
	WarmFallbacks int64            `json:"warm_fallbacks,omitempty"`
	// ResumeTimes are the latest resumptions' durations, oldest first.
	ResumeTimes []time.Duration `json:"resume_times_ns,omitempty"`
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	s.mu.Lock()
	errs := make(map[string]int64, len(s.errors))
	for k, v := range s.errors {
		errs[k] = v
	}
	snap := StatsSnapshot{Errors: errs, LastError: s.lastErr, LastErrorAt: s.lastErrAt, ResumeTimes: append([]time.Duration(nil), s.resumes...)}
	s.mu.Unlock()
	snap.Open, snap.Lingering, snap.Total = s.Open.Load(), s.Lingering.Load(), s.Total.Load()
	snap.Evicted = s.Evicted.Load()
	snap.BytesIn, snap.BytesOut = s.BytesIn.Load(), s.BytesOut.Load()
	snap.Resumptions = s.Resumptions.Load()
	snap.WarmHits, snap.WarmMisses, snap.WarmFallbacks = s.WarmHits.Load(), s.WarmMisses.Load(), s.WarmFallbacks.Load()
	return snap
}
