package tunnel

import (
	"errors"
	"net"
	"testing"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

func TestRuleFor(t *testing.T) {
	cfg, err := config.Parse("c.yaml", []byte(`forwards:
  - {name: pg, listen: 5433, sprite: db, port: 5432, mode: mux, keep_awake: always}
sprites:
  db: {mode: direct, keep_awake: never}
  web: {mode: mux}
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sprite    string
		port      int
		mode      config.Mode
		keepAwake config.KeepAwake
	}{
		{"db", 5432, config.Mux, config.Always},            // the forward to db:5432
		{"db", 22, config.Direct, config.Never},            // db's own section
		{"web", 3000, config.Mux, config.DefaultKeepAwake}, // web's section, defaults for the rest
		{"other", 80, config.DefaultMode, config.DefaultKeepAwake},
	}
	for _, tt := range tests {
		r := ruleFor(cfg, FrontStdio, tt.sprite, tt.port)
		if r.Mode != tt.mode || r.KeepAwake != tt.keepAwake || r.Sprite != tt.sprite || r.Port != tt.port || r.Listen != FrontStdio {
			t.Errorf("%s:%d: %+v, want mode %s, keep_awake %s", tt.sprite, tt.port, r, tt.mode, tt.keepAwake)
		}
	}
}

// TestCarryLimits: a front's connections to a sprite and port count
// against the max_connections of the forward to them, as a listener's do,
// and show in that front's status row.
func TestCarryLimits(t *testing.T) {
	r := newRig(t, spritestest.Options{}, "", "  - {name: db, listen: 0, sprite: db, port: 7, max_connections: 1}\n")
	pair := func() (client, local net.Conn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		client, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		local, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(); local.Close() })
		return client, local
	}
	c1, l1 := pair()
	ended := make(chan error, 1)
	if err := r.d.Carry(FrontSOCKS, "db", 7, l1, func(err error) { ended <- err }); err != nil {
		t.Fatal(err)
	}
	echoCheck(t, c1.(*net.TCPConn), 64)
	_, l2 := pair()
	if err := r.d.Carry(FrontSOCKS, "db", 7, l2, func(error) {}); !errors.Is(err, errTooManyConnections) {
		t.Errorf("a second connection over max_connections 1: %v, want errTooManyConnections", err)
	}
	c1.Close()
	if err := <-ended; err != nil {
		t.Logf("the first connection ended with %v", err)
	}
	st := r.status(t, "socks db:7")
	if st.Total != 1 || st.Errors[ClassLimit] != 1 || st.State != StateActive || st.Listen != FrontSOCKS {
		t.Errorf("status row %+v, want 1 connection and 1 refusal over the limit", st)
	}
}
