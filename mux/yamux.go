package mux

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/rs/zerolog"
)

// WindowSize is yamux's per-stream receive window at both ends: the
// largest Buffer, so that a stream's own window (see window) is what
// bounds it. yamux allocates as data arrives, and the peer's window bounds
// what it may have in flight, so the size costs no memory by itself.
const WindowSize = maxBuffer

func yamuxConfig(log zerolog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = WindowSize
	c.AcceptBacklog = 1024
	// The daemon pings when its streams want the sprite kept awake; yamux's
	// own keepalive would ping regardless, and keep a sprite up that
	// keep_awake: never wants asleep.
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = 30 * time.Second
	c.LogOutput = nil
	c.Logger = yamuxLogger{log}
	return c
}

// yamuxLogger raises yamux's "[ERR]" lines to warn; a zerolog.Logger used
// directly would log them at debug, out of sight. A link that ends (EOF,
// reset, closed) is not news: spritefwd logs drops itself, once.
type yamuxLogger struct{ log zerolog.Logger }

func (l yamuxLogger) Print(v ...any)                 { l.emit(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.emit(fmt.Sprintf(format, v...)) }
func (l yamuxLogger) Println(v ...any)               { l.emit(fmt.Sprint(v...)) }

func (l yamuxLogger) emit(msg string) {
	for _, end := range []string{"EOF", "closed", "reset by peer", "broken pipe", "i/o timeout", "session shutdown"} {
		if strings.Contains(msg, end) {
			l.log.Debug().Msg(msg)
			return
		}
	}
	l.log.Warn().Msg(msg)
}
