package spritestest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Stream ids of the exec WebSocket's non-TTY binary frames.
const (
	streamStdin    = 0
	streamStdout   = 1
	streamStderr   = 2
	streamExit     = 3
	streamStdinEOF = 4
)

// defaultMaxRunAfterDisconnect is how long a command outlives its
// WebSocket unless the request says otherwise; 0 means forever.
const defaultMaxRunAfterDisconnect = 10 * time.Second

// execSession is a command run "inside" a sprite: a local child process
// with the sprite's directory as its working directory.
type execSession struct {
	id      int
	cmd     *exec.Cmd
	command string // as session_info and the session list report it
	workdir string // inside the sprite
	created time.Time
	output  atomic.Int64  // when the command last wrote output, in Unix nanoseconds
	done    chan struct{} // closed when the process has exited
	code    int
}

// activeWindow is how recent a session's output must be for the session
// list to call it active. The real server decides with an inactivity
// timer whose length is not public.
const activeWindow = 10 * time.Second

// execSessionJSON is one entry of GET exec, in the reference's form
// ({id, created, command, is_active, last_activity, ...}) and with the
// fields the official SDK reads. The id is a number, like session_info's
// session_id.
type execSessionJSON struct {
	ID           int        `json:"id"`
	Command      string     `json:"command"`
	Workdir      string     `json:"workdir"`
	Created      time.Time  `json:"created"`
	TTY          bool       `json:"tty"`
	IsActive     bool       `json:"is_active"`
	LastActivity *time.Time `json:"last_activity,omitempty"`
}

// handleListExec answers GET exec without cmd: the sprite's running
// commands, attached or not.
func (s *Server) handleListExec(w http.ResponseWriter, r *http.Request, sp *sprite) {
	s.touch(sp)
	now := time.Now()
	s.mu.Lock()
	out := make([]execSessionJSON, 0, len(sp.sessions))
	for sess := range sp.sessions {
		e := execSessionJSON{ID: sess.id, Command: sess.command, Workdir: sess.workdir, Created: sess.created}
		if ns := sess.output.Load(); ns != 0 {
			t := time.Unix(0, ns)
			e.LastActivity = &t
			e.IsActive = now.Sub(t) < activeWindow
		}
		out = append(out, e)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	writeJSON(w, http.StatusOK, map[string]any{"sessions": out, "count": len(out)})
}

// isUpgrade reports a WebSocket upgrade request.
func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// handleExec runs ?cmd= (repeatable) as a child process and speaks the exec
// WebSocket protocol: session_info, then stdout/stderr frames prefixed with
// their stream id, then an exit frame and an exit message. TTY mode is not
// emulated. A command outlives its WebSocket for max_run_after_disconnect.
//
// Without cmd (and without id) it lists sessions, as the real server does;
// a WebSocket upgrade without cmd is refused with the real server's 400.
func (s *Server) handleExec(w http.ResponseWriter, r *http.Request, sp *sprite) {
	q := r.URL.Query()
	argv := q["cmd"]
	if len(argv) == 0 {
		argv = q["cmd[]"] // the real server takes this spelling too
	}
	switch {
	case q.Get("id") != "":
		apiError(w, http.StatusBadRequest, "bad_request", "the emulator does not attach to sessions (id)")
		return
	case len(argv) == 0 && isUpgrade(r):
		http.Error(w, "No command specified", http.StatusBadRequest)
		return
	case len(argv) == 0:
		s.handleListExec(w, r, sp)
		return
	case !isUpgrade(r):
		// What the real server's WebSocket library answers; the command
		// must not start, nor the sprite wake, for a request that cannot
		// carry its output.
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	name := q.Get("path")
	if name == "" {
		name = argv[0]
	}
	if q.Get("tty") == "true" {
		apiError(w, http.StatusBadRequest, "bad_request", "the emulator does not emulate tty sessions")
		return
	}
	maxRun := defaultMaxRunAfterDisconnect
	if v := q.Get("max_run_after_disconnect"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			secs, serr := strconv.Atoi(v)
			if serr != nil {
				apiError(w, http.StatusBadRequest, "bad_request", "max_run_after_disconnect: want a duration such as 10s, or 0")
				return
			}
			d = time.Duration(secs) * time.Second
		}
		maxRun = d
	}
	if waking := s.touch(sp); waking != nil {
		select {
		case <-waking:
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		}
	}
	dir, err := s.resolve(sp, "/"+q.Get("dir"))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		apiError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(-1)
	ctx := context.Background()

	var args []string
	if len(argv) > 1 {
		args = argv[1:]
	}
	cmd := exec.Command(name, args...)
	if !strings.Contains(name, "/") {
		if p, err := exec.LookPath(name); err == nil {
			cmd.Path = p
		}
	} else if !filepath.IsAbs(name) {
		cmd.Path = filepath.Join(dir, name)
	} else if p, err := s.resolve(sp, name); err == nil {
		if _, err := os.Stat(p); err == nil {
			cmd.Path = p // a file written into the sprite; otherwise a system program such as /bin/sh
		}
	}
	cmd.Dir = dir
	root, _ := s.resolve(sp, "/")
	// The tables exist before the command can read them.
	v4, v6 := renderTables(s.socketsOf(sp))
	_ = writeTables(root, v4, v6)
	cmd.Env = append([]string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), ProcNetEnv + "=" + filepath.Join(root, procNetDir)}, q["env"]...)
	setProcessGroup(cmd) // so a kill takes the command's children too
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	var stdin io.WriteCloser
	if q.Get("stdin") == "true" {
		stdin, _ = cmd.StdinPipe()
	}
	if err := cmd.Start(); err != nil {
		ws.Write(ctx, websocket.MessageBinary, append([]byte{streamStderr}, []byte(err.Error()+"\n")...))
		ws.Write(ctx, websocket.MessageBinary, []byte{streamExit, 127})
		ws.Write(ctx, websocket.MessageText, mustJSON(map[string]any{"type": "exit", "exit_code": 127}))
		ws.Close(websocket.StatusNormalClosure, "")
		return
	}
	s.mu.Lock()
	s.nextID++
	sess := &execSession{
		id: s.nextID, cmd: cmd, command: name, workdir: path.Clean("/" + q.Get("dir")),
		created: time.Now(), done: make(chan struct{}),
	}
	sp.sessions[sess] = struct{}{}
	sp.stats.Execs++
	sp.execs++ // an attached session keeps the sprite awake
	s.mu.Unlock()
	// session_id is a number, as in the reference's example; the official
	// SDK expects a string, and our client takes either.
	ws.Write(ctx, websocket.MessageText, mustJSON(map[string]any{
		"type": "session_info", "session_id": sess.id, "command": name, "tty": false, "is_owner": true,
	}))

	// Output goes to the WebSocket while it is attached, and is drained
	// (so the process never blocks on a full pipe) after it detaches.
	var attached sync.Mutex
	detached := false
	send := func(stream byte, b []byte) {
		sess.output.Store(time.Now().UnixNano())
		attached.Lock()
		defer attached.Unlock()
		if !detached {
			if ws.Write(ctx, websocket.MessageBinary, append([]byte{stream}, b...)) != nil {
				detached = true
			}
		}
	}
	stopPorts := make(chan struct{})
	defer close(stopPorts)
	go s.watchPorts(cmd.Process.Pid, stopPorts, func(typ string, port int) {
		attached.Lock()
		defer attached.Unlock()
		if !detached {
			ws.Write(ctx, websocket.MessageText, mustJSON(map[string]any{
				"type": typ, "port": port, "address": "127.0.0.1", "pid": cmd.Process.Pid,
			}))
		}
	})
	var pumps sync.WaitGroup
	for stream, rd := range map[byte]io.Reader{streamStdout: stdout, streamStderr: stderr} {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := rd.Read(buf)
				if n > 0 {
					send(stream, buf[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	}
	// Wait closes the pipes, so it runs once the pumps have read them dry.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		pumps.Wait()
		s.superviseExec(sp, sess)
	}()
	// The client's frames: stdin data and stdin EOF.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			typ, msg, err := ws.Read(ctx)
			if err != nil {
				return
			}
			s.touch(sp)
			if typ != websocket.MessageBinary || len(msg) == 0 || stdin == nil {
				continue
			}
			switch msg[0] {
			case streamStdin:
				stdin.Write(msg[1:])
			case streamStdinEOF:
				stdin.Close()
			}
		}
	}()
	select {
	case <-sess.done: // all output was sent: the pumps finished first
		attached.Lock()
		if !detached {
			ws.Write(ctx, websocket.MessageBinary, []byte{streamExit, byte(sess.code)})
			ws.Write(ctx, websocket.MessageText, mustJSON(map[string]any{"type": "exit", "exit_code": sess.code}))
			ws.Close(websocket.StatusNormalClosure, "")
		}
		detached = true
		attached.Unlock()
	case <-readerDone:
		attached.Lock()
		detached = true
		attached.Unlock()
		if maxRun > 0 {
			t := time.AfterFunc(maxRun, func() { killProcessGroup(cmd.Process) })
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				<-sess.done
				t.Stop()
			}()
		}
	case <-s.stop:
	}
	ws.CloseNow()
	<-readerDone
	s.mu.Lock()
	sp.execs--
	s.mu.Unlock()
}

// execListens reports whether one of the sprite's exec commands listens on
// port.
func (s *Server) execListens(sp *sprite, port int) bool {
	s.mu.Lock()
	var pids []int
	for sess := range sp.sessions {
		pids = append(pids, sess.cmd.Process.Pid)
	}
	s.mu.Unlock()
	for _, pid := range pids {
		if listeningPorts(pid)[port] {
			return true
		}
	}
	return false
}

// watchPorts sends port_opened and port_closed notices for the command's
// listening ports while the client is attached.
func (s *Server) watchPorts(pid int, stop <-chan struct{}, notify func(typ string, port int)) {
	known := map[int]bool{}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		now := listeningPorts(pid)
		for p := range now {
			if !known[p] {
				notify("port_opened", p)
			}
		}
		for p := range known {
			if !now[p] {
				notify("port_closed", p)
			}
		}
		known = now
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// freezeLocked and thawLocked stop and continue a sprite's commands, as
// suspension does: they are frozen, not killed.
func (s *Server) freezeLocked(sp *sprite) {
	for sess := range sp.sessions {
		freezeProcessGroup(sess.cmd.Process)
	}
}

func (s *Server) thawLocked(sp *sprite) {
	for sess := range sp.sessions {
		thawProcessGroup(sess.cmd.Process)
	}
}

// superviseExec reaps the process and forgets the session.
func (s *Server) superviseExec(sp *sprite, sess *execSession) {
	err := sess.cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		sess.code = exit.ExitCode()
	default:
		sess.code = 137 // killed by a signal
	}
	s.mu.Lock()
	delete(sp.sessions, sess)
	s.mu.Unlock()
	close(sess.done)
}

// killSessionsLocked ends every command of a sprite: on Close and delete.
func (s *Server) killSessionsLocked(sp *sprite) {
	for sess := range sp.sessions {
		killProcessGroup(sess.cmd.Process)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("spritestest: %v", err))
	}
	return b
}
