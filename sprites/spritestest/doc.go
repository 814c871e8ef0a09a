// Package spritestest is an in-process emulator of the Sprites API, in the
// style of httptest.Server. It models what the daemon depends on (auth, the
// sleep/wake lifecycle, the proxy WebSocket and its close codes, exec and
// the filesystem calls that deploy the mux agent) and fails the ways the
// real service does, on demand, so that tests can prove recovery. The same
// server runs as `spritefwd sim`.
//
// Its reference is the real service as far as it is known from outside:
// the API reference, the public docs, the official Go SDK and the server
// that runs inside each sprite (November 2025); see
// sprites-protocol-notes.md. What it still does differently is listed
// here, so that a test passing against it is not mistaken for proof
// against production.
//
// One server, two roles. It plays both the public edge and the server
// inside the sprite. Auth failures are the in-sprite server's plain-text
// 401 ("Missing or invalid authentication"); the edge may answer in JSON,
// or with 403. Its other errors (404 for an unknown sprite, 400s) are JSON
// {"error","message"} of its own choosing.
//
// Proxy:
//   - MaxMessage defaults to 1 MiB. The November 2025 server reads at most
//     1,024 bytes per client message, the August 2025 one 10 MB; what
//     production runs is unknown. Its 1009 close carries the WebSocket
//     library's reason ("read limited at N bytes"); the real one is empty.
//   - Targets are routes set with Map, or ports that an exec command
//     listens on, on this machine's loopback. Only localhost, 127.0.0.1,
//     ::1 (and 10.0.0.1 for mapped ports) are reachable; the real server
//     dials any host from the sprite's network. Its dials time out after
//     5 s; the real server's use the system's timeout.
//   - Idleness: a sprite sleeps after IdleSleep without messages or pings,
//     even with a link open. The real server counts any in-flight request,
//     an open link included, as activity; measurements found pings were
//     needed anyway, and this is the stricter of the two.
//   - ColdFail, ColdDrop, the TargetEOF modes other than keep-open,
//     Latency, DropRate and offline are faults to test against, not
//     behaviours of one version of the service. NoQueryInit plays a server
//     that ignores ?host=&port=.
//   - /control (the SDK's pooled connections) is not served; it answers
//     404, on which the official SDK falls back to /exec and /proxy.
//
// Exec:
//   - Commands are local processes run as the current user, in a
//     per-sprite directory that stands for "/": the working directory and
//     a program given by an absolute path that exists there are
//     translated, but the command sees this machine's file system and
//     network. Its environment is HOME, PATH and the env= values.
//   - No TTY (tty=true is a 400), no attach (id= is a 400), no
//     DELETE exec/{id}, no resize or signal messages, no HTTP POST exec.
//   - session_info is sent for every command, with session_id a number as
//     the reference shows it; the official SDK reads a string, and the
//     November 2025 server's code sends no session_info at all.
//   - The session list (GET exec without cmd) lists every running
//     command, attached or not; the real server lists its detachable
//     (tmux) sessions, whose ids are strings. is_active means output in
//     the last 10 s; the real server uses an inactivity timer.
//   - port_opened/port_closed come from polling every 100 ms (the real
//     server: about every second) and give the address 127.0.0.1, where
//     the real server gives one the proxy can reach (10.0.0.1).
//
// Filesystem:
//   - fs/write takes PUT (what the SDK sends; workingDir required, as the
//     docs say) and POST (what the reference lists; workingDir optional).
//     Without mkdirParents=true a missing parent is a 400; the real status
//     is unknown. A file is truncated in place, so rewriting a running
//     program fails with "text file busy"; how the real server writes is
//     unknown. The mode is applied exactly, whatever the umask.
//   - fs/read and fs/list take workingDir but do not require it. fs/read
//     has no ranges (206). fs/list answers in the form the SDK parses; a
//     file lists as itself (the SDK's Stat relies on that), and type is
//     "file" or "directory" only.
//   - Paths go through an os.Root of the sprite's directory: ".." stops at
//     "/", and a symbolic link that is absolute or leads outside is
//     refused, where a real sprite would follow it within its own disk.
//   - Errors are JSON {"error","path"}, without the SDK's optional "code".
//   - fs/delete, fs/rename, fs/copy and fs/chmod are not served.
//
// Management: create takes only a name; PUT /v1/sprites/{name} is accepted
// and changes nothing; there are no rate limits (429, Retry-After,
// X-RateLimit-*), checkpoints, services or network policy.
package spritestest
