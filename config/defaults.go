package config

import "time"

// Defaults, in one place. settings.go gives each its key, and a test holds
// README.md's settings table, and the packages that cannot import config, to them.
const (
	DefaultAPIURL           = "https://api.sprites.dev"
	DefaultTokenFile        = "~/.config/spritefwd/token"
	DefaultKeepalive        = 15 * time.Second // ping interval; the sprite sleeps after 30 s idle
	DefaultWakeTimeout      = 60 * time.Second // a cold wake takes 1-12 s; the server may hold 30 s
	DefaultShutdownGrace    = 10 * time.Second // open connections get this long on stop or removal
	DefaultHalfCloseTimeout = 5 * time.Second  // after the client closes its side, how long the sprite may stay silent
	DefaultMaxMessage       = 32 << 10         // largest WebSocket message we send
	DefaultMaxConnections   = 1024             // per forward
	DefaultHost             = "localhost"      // target host inside the sprite
	DefaultBind             = "127.0.0.1"      // listen host when a rule gives only a port
	DefaultKeepAwake        = WhileConnected
	DefaultMode             = Direct
	DefaultSOCKSSuffix      = ".sprite"        // stripped from SOCKS destination names
	DefaultWarmLinks        = 2                // spare links per sprite in use, in direct mode
	DefaultWarmLinger       = 10 * time.Second // spares are kept this long after the last connection

	// Mux mode (see the agent).
	DefaultAgentPort      = 7022             // where the agent listens inside the sprite
	DefaultAgentDir       = "/tmp/spritefwd" // where the daemon puts the agent inside the sprite
	DefaultMuxIdleTimeout = 30 * time.Second // close an agent session this long after its last stream
	DefaultResumeWindow   = 2 * time.Minute  // how long streams wait for a dropped link to come back
	DefaultResumeBuffer   = 64 << 20         // the most one stream's window (bytes in flight, kept for replay) grows to, per direction
	DefaultMuxMemory      = 256 << 20        // what the daemon's mux windows may hold together beyond 256 KiB each

	// MaxFileSize bounds what Load reads, so a runaway file cannot eat memory.
	MaxFileSize = 1 << 20
)
