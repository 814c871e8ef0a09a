// Package soak is spritefwd's chaos soak: the real daemon binary, under
// load from pgbench and checksummed bulk transfers, while a chaos driver
// puts sprites to sleep, drops links, changes how the emulator wakes,
// injects latency and rewrites the config. It proves that nothing is ever
// delivered corrupted or silently truncated, and that nothing leaks.
// Run it with `make soak DURATION=10m`; plain `go test` skips it.
package soak
