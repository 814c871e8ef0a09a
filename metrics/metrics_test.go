package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestScrape(t *testing.T) {
	st := tunnel.Status{Name: "db:5432", Listen: "127.0.0.1:5432", Target: "db:5432", State: tunnel.StateListening}
	st.Open, st.Total, st.BytesIn, st.BytesOut, st.Wakes = 2, 40, 1000, 5000, 3
	st.Errors = map[string]int64{tunnel.ClassLinkBroken: 4}
	st.MaxMessage = sprites.MessageLimit{Bytes: 1024, State: sprites.LimitRefused}
	drained := tunnel.Status{Name: "db:5432", State: tunnel.StateDraining}
	socks := tunnel.Status{Name: "socks web:3000", Listen: tunnel.FrontSOCKS, Target: "web:3000", State: tunnel.StateActive}
	socks.Total = 7
	m := New(func() []tunnel.Status { return []tunnel.Status{st, drained, socks} }, func() (int64, int64) { return 19 << 20, 256 << 20 })
	m.ObserveWake("db", 2*time.Second)
	m.ObserveSetup("db:5432", 3*time.Millisecond)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	srv.Client().CloseIdleConnections()
	text := string(body)
	for _, want := range []string{
		`spritefwd_connections_total{forward="db:5432"} 40`,
		`spritefwd_active_links{forward="db:5432"} 2`,
		`spritefwd_bytes_total{direction="in",forward="db:5432"} 1000`,
		`spritefwd_bytes_total{direction="out",forward="db:5432"} 5000`,
		`spritefwd_errors_total{class="link_broken",forward="db:5432"} 4`,
		`spritefwd_wakes_total{forward="db:5432"} 3`,
		`spritefwd_max_message_bytes{forward="db:5432",state="refused"} 1024`,
		`spritefwd_forward_up{forward="db:5432",listen="127.0.0.1:5432",target="db:5432"} 1`,
		`spritefwd_wake_wait_seconds_count{sprite="db"} 1`,
		`spritefwd_connections_total{forward="socks web:3000"} 7`,
		`spritefwd_forward_up{forward="socks web:3000",listen="socks",target="web:3000"} 1`,
		`spritefwd_link_setup_seconds_count{forward="db:5432"} 1`,
		`spritefwd_mux_window_bytes 1.9922944e+07`,
		`spritefwd_mux_memory_bytes 2.68435456e+08`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Count(text, `spritefwd_connections_total{forward="db:5432"`) != 1 {
		t.Error("a draining forward was exported beside its successor")
	}
}
