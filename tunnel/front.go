package tunnel

import (
	"errors"
	"fmt"
	"net"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/sock"
)

// StateActive is the state of a front's row: it has no listener to be in
// any other state.
const StateActive = "active"

// ErrStopped: the daemon is shutting down and takes no new connection.
var ErrStopped = errors.New("spritefwd is shutting down")

// ruleFor is the settings a front's connection to sprite:port gets: those
// of a forward to the same sprite and port if one is configured, else the
// sprite's own under sprites:, else the defaults.
func ruleFor(cfg *config.Config, front, sprite string, port int) config.Forward {
	r := config.DefaultForward()
	if cfg != nil {
		found := false
		for _, f := range cfg.Forwards {
			if f.Sprite == sprite && f.Port == port {
				r, found = f, true
				break
			}
		}
		if s, ok := cfg.Sprites[sprite]; ok && !found {
			r = s.Apply(r)
		}
	}
	r.Name = fmt.Sprintf("%s %s:%d", front, sprite, port)
	r.Listen, r.Sprite, r.Port, r.AllowPublic, r.Pos = front, sprite, port, false, config.Pos{}
	return r
}

// frontRow returns the forward-like row that accounts for front's
// connections to sprite:port, making it on first use. When a reload has
// changed the row's settings it is replaced, and the old row drains.
func (d *Daemon) frontRow(front, sprite string, port int) (*forward, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrStopped
	}
	rule := ruleFor(d.cfg, front, sprite, port)
	old := d.fronts[rule.Name]
	if old != nil && old.rule.Same(rule) {
		return old, nil
	}
	wake, grace := config.DefaultWakeTimeout, config.DefaultShutdownGrace
	if d.cfg != nil {
		wake, grace = d.cfg.WakeTimeout, d.cfg.ShutdownGrace
	}
	f := newForward(d, rule, d.wakerLocked(sprite, wake))
	f.state = StateActive
	if old != nil {
		d.drainers[old] = struct{}{}
		d.draining.Add(1)
		go func() {
			defer d.draining.Done()
			old.drain(grace)
			d.mu.Lock()
			delete(d.drainers, old)
			d.mu.Unlock()
		}()
	}
	d.fronts[rule.Name] = f
	if rule.KeepAwake == config.Always {
		f.wg.Add(1)
		go f.keepAwake()
	}
	return f, nil
}

// Carry carries c, for a front without a listener of its own (FrontStdio,
// FrontSOCKS), to port inside sprite, through the transport the settings
// for that sprite and port choose, under their max_connections. It returns once the connection is open,
// or with why it could not be (c is reset then); done is called once with
// how an open connection ended: nil for a clean end, else what broke it.
func (d *Daemon) Carry(front, sprite string, port int, c net.Conn, done func(error)) error {
	f, err := d.frontRow(front, sprite, port)
	if err != nil {
		sock.Reset(c)
		return err
	}
	if !f.admit() {
		err := fmt.Errorf("%s: %w (%d); new connections are refused until some close", f.rule.Name, errTooManyConnections, f.rule.MaxConnections)
		f.stats.recordError(ClassLimit, err, d.clock.Now())
		f.warn(err, "connection refused")
		sock.Reset(c)
		return err
	}
	f.stats.Open.Add(1)
	f.stats.Total.Add(1)
	f.conns.Add(1)
	opened := make(chan error, 1)
	f.serve(c, func(err error) { opened <- err }, done)
	return <-opened
}
