package tunnel

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/spritefwd/spritefwd/config"
	"github.com/spritefwd/spritefwd/socks"
	"github.com/spritefwd/spritefwd/sprites"
)

// socksFront is the SOCKS port: one listener, whose connections the
// daemon carries as a front's (rows named "socks sprite:port").
type socksFront struct {
	key string // what it was made from; a reload that changes it restarts it
	ln  net.Listener
}

// socksKey is what makes a SOCKS front: a reload restarts it only when
// that changes.
func socksKey(cfg *config.Config, users map[string]string) string {
	return fmt.Sprintf("%s|%s|%v", cfg.SOCKS, cfg.SOCKSSuffix, users)
}

// socksUsers loads the SOCKS front's users, if it has any.
func socksUsers(cfg *config.Config) (map[string]string, error) {
	if cfg.SOCKS == "" || cfg.SOCKSUsersFile == "" {
		return nil, nil
	}
	users, err := socks.LoadUsers(cfg.SOCKSUsersFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	return users, nil
}

// applySOCKS starts, restarts or stops the SOCKS front to match cfg. A
// listen failure is logged and the rest of the config still applies, as
// for a forward.
func (d *Daemon) applySOCKS(cfg *config.Config, users map[string]string) {
	key := socksKey(cfg, users)
	d.mu.Lock()
	old := d.socks
	if old != nil && old.key == key && cfg.SOCKS != "" {
		d.mu.Unlock()
		return
	}
	d.socks = nil
	d.mu.Unlock()
	if old != nil {
		// Connections it is still opening carry on; Shutdown waits for them.
		old.ln.Close()
	}
	if cfg.SOCKS == "" {
		return
	}
	ln, err := d.listen(context.Background(), "tcp", cfg.SOCKS)
	if err != nil {
		d.log.Error().Err(err).Str("socks", cfg.SOCKS).Msg("SOCKS port failed to listen; fix socks: or free the port, then reload")
		return
	}
	srv := &socks.Server{
		Suffix: cfg.SOCKSSuffix, Users: users, Exists: d.spriteExists, Classify: socksReply,
		Carry: func(sprite string, port int, c net.Conn, done func(error)) error {
			return d.Carry(FrontSOCKS, sprite, port, c, done)
		},
		Log: d.log.With().Str("front", FrontSOCKS).Logger(),
	}
	f := &socksFront{key: key, ln: ln}
	d.socksWG.Add(1)
	go func() {
		defer d.socksWG.Done()
		if err := srv.Serve(ln); err != nil {
			d.log.Error().Err(err).Msg("SOCKS port stopped")
		}
	}()
	d.mu.Lock()
	d.socks = f
	d.mu.Unlock()
	d.log.Info().Str("socks", ln.Addr().String()).Bool("auth", users != nil).Msg("SOCKS port listening")
}

// stopSOCKS closes the SOCKS port. The connections it was still opening
// end with the fronts' drain; socksWG waits for them.
func (d *Daemon) stopSOCKS() {
	d.mu.Lock()
	f := d.socks
	d.socks = nil
	d.mu.Unlock()
	if f != nil {
		f.ln.Close()
	}
}

// SOCKSAddr is where the SOCKS front listens, or "" if it does not.
func (d *Daemon) SOCKSAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.socks == nil {
		return ""
	}
	return d.socks.ln.Addr().String()
}

// socksReply is the SOCKS reply for a connection that failed.
func socksReply(err error) byte {
	switch ErrorClass(err) {
	case ClassNotFound:
		return socks.ReplyHostUnreachable
	case ClassRefused:
		return socks.ReplyConnectionRefused
	case ClassAuth, ClassBadRequest:
		return socks.ReplyNotAllowed
	case ClassWakeTimeout:
		return socks.ReplyTTLExpired
	}
	return socks.ReplyGeneralFailure
}

// How long an answer about whether a sprite exists is kept: a storm of
// requests for one name costs one API call, and a new sprite is found
// soon after it is made.
const (
	existsTTL  = 30 * time.Second
	missingTTL = 5 * time.Second
)

type existence struct {
	ok bool
	at time.Time
}

// existsCache is the answers of spriteExists.
type existsCache struct {
	mu sync.Mutex
	m  map[string]existence
}

// spriteExists asks the API whether sprite exists, once per existsTTL
// (missingTTL when it does not). Asking wakes the sprite, as any call
// about it does; the connection that follows would wake it anyway.
func (d *Daemon) spriteExists(ctx context.Context, sprite string) (bool, error) {
	now := d.clock.Now()
	d.exists.mu.Lock()
	e, ok := d.exists.m[sprite]
	d.exists.mu.Unlock()
	if ok && (e.ok && now.Sub(e.at) < existsTTL || !e.ok && now.Sub(e.at) < missingTTL) {
		return e.ok, nil
	}
	_, err := d.env.Load().client.Get(ctx, sprite)
	switch {
	case sprites.IsNotFound(err):
		e = existence{ok: false, at: now}
	case err != nil:
		return false, err
	default:
		e = existence{ok: true, at: now}
	}
	d.exists.mu.Lock()
	if d.exists.m == nil || len(d.exists.m) > 1000 {
		d.exists.m = map[string]existence{}
	}
	d.exists.m[sprite] = e
	d.exists.mu.Unlock()
	return e.ok, nil
}
