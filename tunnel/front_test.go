package tunnel

import (
	"testing"

	"github.com/spritefwd/spritefwd/config"
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
