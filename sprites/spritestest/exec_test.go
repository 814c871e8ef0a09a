//go:build unix

package spritestest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/spritefwd/spritefwd/internal/testsvc"
)

func dialExec(t *testing.T, s *Server, q url.Values) *websocket.Conn {
	t.Helper()
	u := strings.Replace(s.URL, "http://", "ws://", 1) + "/v1/sprites/box/exec?" + q.Encode()
	ws, _, err := websocket.Dial(context.Background(), u, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + testToken}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws
}

// session reads an exec WebSocket to its end.
type session struct {
	info           map[string]any
	stdout, stderr bytes.Buffer
	exitFrame      int
	exitMsg        int
}

func readSession(t *testing.T, ws *websocket.Conn) session {
	t.Helper()
	s := session{exitFrame: -1, exitMsg: -1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		typ, msg, err := ws.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("session ended with %v", err)
			}
			return s
		}
		if typ == websocket.MessageText {
			var m map[string]any
			json.Unmarshal(msg, &m)
			switch m["type"] {
			case "session_info":
				s.info = m
			case "exit":
				s.exitMsg = int(m["exit_code"].(float64))
			}
			continue
		}
		switch msg[0] {
		case streamStdout:
			s.stdout.Write(msg[1:])
		case streamStderr:
			s.stderr.Write(msg[1:])
		case streamExit:
			s.exitFrame = int(msg[1])
		}
	}
}

func TestExecStreamsAndExitCode(t *testing.T) {
	s := newExecServer(t)
	ws := dialExec(t, s, url.Values{"cmd": {"sh", "-c", "echo out; echo err >&2; pwd; exit 3"}})
	got := readSession(t, ws)
	if got.info["type"] != "session_info" || got.info["tty"] != false {
		t.Errorf("session_info %v", got.info)
	}
	// A number, as in the reference's example (the SDK expects a string).
	if id, ok := got.info["session_id"].(float64); !ok || id < 1 {
		t.Errorf("session_id %#v, want a positive number", got.info["session_id"])
	}
	if !strings.HasPrefix(got.stdout.String(), "out\n") || got.stderr.String() != "err\n" {
		t.Errorf("stdout %q stderr %q", got.stdout.String(), got.stderr.String())
	}
	if got.exitFrame != 3 || got.exitMsg != 3 {
		t.Errorf("exit frame %d, exit message %d; want 3", got.exitFrame, got.exitMsg)
	}
}

func TestExecStdin(t *testing.T) {
	s := newExecServer(t)
	ws := dialExec(t, s, url.Values{"cmd": {"cat"}, "stdin": {"true"}})
	ctx := context.Background()
	ws.Write(ctx, websocket.MessageBinary, append([]byte{streamStdin}, "through stdin"...))
	ws.Write(ctx, websocket.MessageBinary, []byte{streamStdinEOF})
	got := readSession(t, ws)
	if got.stdout.String() != "through stdin" || got.exitFrame != 0 {
		t.Errorf("stdout %q exit %d", got.stdout.String(), got.exitFrame)
	}
}

// TestFSWriteThenExec: a file written through fs/write, as the official
// SDK writes it, is the file a command sees at the same path, with the
// mode asked for.
func TestFSWriteThenExec(t *testing.T) {
	s := newExecServer(t)
	script := "#!/bin/sh\necho \"hello from $1\"\n"
	q := url.Values{"path": {"bin/hello.sh"}, "workingDir": {"/work"}, "mode": {"0755"}, "mkdirParents": {"true"}}
	if code, _, body := call(t, s, http.MethodPut, "/v1/sprites/box/fs/write?"+q.Encode(), strings.NewReader(script)); code != http.StatusOK {
		t.Fatalf("fs/write: HTTP %d %s", code, body)
	}
	got := readSession(t, dialExec(t, s, url.Values{"cmd": {"./bin/hello.sh", "the sprite"}, "dir": {"/work"}}))
	if got.stdout.String() != "hello from the sprite\n" || got.exitFrame != 0 {
		t.Errorf("stdout %q stderr %q exit %d", got.stdout.String(), got.stderr.String(), got.exitFrame)
	}
	got = readSession(t, dialExec(t, s, url.Values{"cmd": {"/work/bin/hello.sh", "an absolute path"}}))
	if got.stdout.String() != "hello from an absolute path\n" || got.exitFrame != 0 {
		t.Errorf("stdout %q stderr %q exit %d", got.stdout.String(), got.stderr.String(), got.exitFrame)
	}
}

// TestExecList: GET exec without cmd lists the running commands; it
// starts nothing. Only a WebSocket upgrade with cmd runs a command.
func TestExecList(t *testing.T) {
	s := newExecServer(t)
	type list struct {
		Count    int `json:"count"`
		Sessions []struct {
			ID           json.Number `json:"id"`
			Command      string      `json:"command"`
			Workdir      string      `json:"workdir"`
			Created      time.Time   `json:"created"`
			IsActive     bool        `json:"is_active"`
			LastActivity *time.Time  `json:"last_activity"`
		} `json:"sessions"`
	}
	get := func() list {
		t.Helper()
		code, ctype, body := call(t, s, http.MethodGet, "/v1/sprites/box/exec", nil)
		var l list
		if err := json.Unmarshal(body, &l); code != http.StatusOK || ctype != "application/json" || err != nil {
			t.Fatalf("GET exec: HTTP %d %q %s (%v)", code, ctype, body, err)
		}
		return l
	}
	if l := get(); l.Count != 0 || len(l.Sessions) != 0 {
		t.Fatalf("no command runs, yet the list is %+v", l)
	}
	ws := dialExec(t, s, url.Values{"cmd": {"sh", "-c", "echo up; exec sleep 30"}, "dir": {"/srv"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, msg, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		SessionID json.Number `json:"session_id"`
	}
	json.Unmarshal(msg, &info)
	if _, _, err := ws.Read(ctx); err != nil { // "up": the command has written output
		t.Fatal(err)
	}
	l := get()
	if l.Count != 1 || len(l.Sessions) != 1 {
		t.Fatalf("list %+v, want the one command", l)
	}
	if e := l.Sessions[0]; e.ID != info.SessionID || e.Command != "sh" || e.Workdir != "/srv" || e.Created.IsZero() || !e.IsActive || e.LastActivity == nil {
		t.Errorf("session %+v, want id %s, sh in /srv, active", e, info.SessionID)
	}

	// Neither a WebSocket without cmd nor a plain GET with cmd runs anything.
	u := strings.Replace(s.URL, "http://", "ws://", 1) + "/v1/sprites/box/exec"
	_, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + testToken}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("WebSocket without cmd: %v %v, want HTTP 400", resp, err)
	}
	code, _, _ := call(t, s, http.MethodGet, "/v1/sprites/box/exec?"+url.Values{"cmd": {"sh", "-c", "echo ran > /ran.txt"}}.Encode(), nil)
	if code != http.StatusBadRequest {
		t.Errorf("GET with cmd but no upgrade: HTTP %d, want 400", code)
	}
	// A command is listed from its start, so the list says at once
	// whether the GET started one.
	if l := get(); l.Count != 1 {
		t.Errorf("list %+v, want still the one command: a GET without an upgrade started one", l)
	}
}

// TestExecOutlivesDisconnect: with max_run_after_disconnect=0 a command
// keeps running after its WebSocket goes; with a short limit it is killed.
func TestExecOutlivesDisconnect(t *testing.T) {
	s := newExecServer(t)
	forever := dialExec(t, s, url.Values{"cmd": {"sh", "-c", "sleep 0.5; echo done > forever.txt"}, "max_run_after_disconnect": {"0"}})
	limited := dialExec(t, s, url.Values{"cmd": {"sh", "-c", "sleep 0.5; echo done > limited.txt"}, "max_run_after_disconnect": {"100ms"}})
	forever.Read(context.Background()) // session_info: both are running
	limited.Read(context.Background())
	forever.CloseNow()
	limited.CloseNow()
	testsvc.Eventually(t, "a command with max_run_after_disconnect=0 to finish after its WebSocket went", func() bool {
		body, code := readFile(t, s, "forever.txt")
		return code == 200 && body == "done\n"
	})
	if _, code := readFile(t, s, "limited.txt"); code != http.StatusNotFound {
		t.Error("a command past its max_run_after_disconnect was not killed")
	}
}
