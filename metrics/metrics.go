// Package metrics exposes the daemon's counters to Prometheus. Counters and
// gauges are read from the forwards' own stats at scrape time, so the
// per-byte path pays nothing for them; the two histograms (wake waits and
// link setup times) are fed by the daemon's hooks.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/tunnel"
)

// Metrics owns a registry; nothing is registered globally.
type Metrics struct {
	reg   *prometheus.Registry
	wake  *prometheus.HistogramVec
	setup *prometheus.HistogramVec
}

// New returns metrics that read forward stats from status, and what the
// mux windows hold against mux_memory from windows, at each scrape.
func New(status func() []tunnel.Status, windows func() (used, limit int64)) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		wake: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spritefwd_wake_wait_seconds",
			Help:    "How long connections waited for a sleeping sprite to wake.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 4, 8, 12, 20, 30, 60},
		}, []string{"sprite"}),
		setup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spritefwd_link_setup_seconds",
			Help:    "Time from accepting a local connection to a connected proxy link, wake included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
		}, []string{"forward"}),
	}
	m.reg.MustRegister(m.wake, m.setup, collector{status: status, windows: windows},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveWake records one wake's wait; pass it as tunnel.Options.OnWake.
func (m *Metrics) ObserveWake(sprite string, d time.Duration) {
	m.wake.WithLabelValues(sprite).Observe(d.Seconds())
}

// ObserveSetup records one link's setup; pass it as tunnel.Options.OnLinkSetup.
func (m *Metrics) ObserveSetup(forward string, d time.Duration) {
	m.setup.WithLabelValues(forward).Observe(d.Seconds())
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

var (
	descConns  = prometheus.NewDesc("spritefwd_connections_total", "Local connections accepted.", []string{"forward"}, nil)
	descActive = prometheus.NewDesc("spritefwd_active_links", "Connections open now, each with its proxy link.", []string{"forward"}, nil)
	descBytes  = prometheus.NewDesc("spritefwd_bytes_total", "Bytes carried; direction in is into the sprite.", []string{"forward", "direction"}, nil)
	descErrors = prometheus.NewDesc("spritefwd_errors_total", "Failed or broken connections by class.", []string{"forward", "class"}, nil)
	descWakes  = prometheus.NewDesc("spritefwd_wakes_total", "Wakes of the forward's sprite that spritefwd waited for.", []string{"forward"}, nil)
	descUp     = prometheus.NewDesc("spritefwd_forward_up", "1 if the forward is listening, or is the always-on row of a front without a listener (stdio, socks).", []string{"forward", "listen", "target"}, nil)
	descResume = prometheus.NewDesc("spritefwd_resumptions_total", "Mux streams moved to a new link after a drop.", []string{"forward"}, nil)
	descWarm   = prometheus.NewDesc("spritefwd_warm_links", "Spare proxy links the forward's sprite holds now, upgraded for the next direct-mode connections.", []string{"forward"}, nil)
	descWarmC  = prometheus.NewDesc("spritefwd_warm_connections_total", "Direct-mode connections by how they got their link: hit (a spare), miss (none at hand, a fresh dial), fallback (the spare failed or was late; a fresh dial took over).", []string{"forward", "result"}, nil)
	descMaxMsg = prometheus.NewDesc("spritefwd_max_message_bytes", "Largest WebSocket message sent to the forward's sprite now; state says whether the sprite's limit is unknown, accepted, refused or configured.", []string{"forward", "state"}, nil)
	descWindow = prometheus.NewDesc("spritefwd_mux_window_bytes", "What all mux streams' windows hold now beyond their first 256 KiB each, out of spritefwd_mux_memory_bytes.", nil, nil)
	descMuxMem = prometheus.NewDesc("spritefwd_mux_memory_bytes", "mux_memory: the most that mux streams' windows may hold together beyond 256 KiB each.", nil, nil)
)

// collector turns a status snapshot into metrics at scrape time.
type collector struct {
	status  func() []tunnel.Status
	windows func() (used, limit int64)
}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descActive, descBytes, descErrors, descWakes, descUp, descResume, descWarm, descWarmC, descMaxMsg, descWindow, descMuxMem} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	used, limit := c.windows()
	ch <- prometheus.MustNewConstMetric(descWindow, prometheus.GaugeValue, float64(used))
	ch <- prometheus.MustNewConstMetric(descMuxMem, prometheus.GaugeValue, float64(limit))
	for _, s := range c.status() {
		if s.State == tunnel.StateDraining {
			continue // its successor, if any, carries the name
		}
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.CounterValue, float64(s.Total), s.Name)
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.Open), s.Name)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.BytesIn), s.Name, "in")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.BytesOut), s.Name, "out")
		for class, n := range s.Errors {
			ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(n), s.Name, class)
		}
		ch <- prometheus.MustNewConstMetric(descWakes, prometheus.CounterValue, float64(s.Wakes), s.Name)
		ch <- prometheus.MustNewConstMetric(descResume, prometheus.CounterValue, float64(s.Resumptions), s.Name)
		if s.Mode == config.Direct {
			ch <- prometheus.MustNewConstMetric(descWarm, prometheus.GaugeValue, float64(s.WarmLinks), s.Name)
			ch <- prometheus.MustNewConstMetric(descWarmC, prometheus.CounterValue, float64(s.WarmHits), s.Name, "hit")
			ch <- prometheus.MustNewConstMetric(descWarmC, prometheus.CounterValue, float64(s.WarmMisses), s.Name, "miss")
			ch <- prometheus.MustNewConstMetric(descWarmC, prometheus.CounterValue, float64(s.WarmFallbacks), s.Name, "fallback")
		}
		ch <- prometheus.MustNewConstMetric(descMaxMsg, prometheus.GaugeValue, float64(s.MaxMessage.Bytes), s.Name, string(s.MaxMessage.State))
		up := 0.0
		if s.State == tunnel.StateListening || s.State == tunnel.StateActive {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, s.Name, s.Listen, s.Target)
	}
}
