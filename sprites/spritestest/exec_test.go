//go:build unix

package spritestest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const testToken = "exec-test-token"

func newExecServer(t *testing.T) *Server {
	s := NewServer(Options{Token: testToken, IdleSleep: -1, WakeDelay: 50 * time.Millisecond})
	t.Cleanup(s.Close)
	s.CreateSprite("box")
	return s
}

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

// TestFSWriteThenExec: a file written through fs/write is the file a
// command sees at the same relative path, with the mode asked for.
func TestFSWriteThenExec(t *testing.T) {
	s := newExecServer(t)
	script := "#!/bin/sh\necho \"hello from $1\"\n"
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/sprites/box/fs/write?path=bin/hello.sh&mode=0755", strings.NewReader(script))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("fs/write: %v %v", err, resp)
	}
	resp.Body.Close()
	got := readSession(t, dialExec(t, s, url.Values{"cmd": {"./bin/hello.sh", "the sprite"}}))
	if got.stdout.String() != "hello from the sprite\n" || got.exitFrame != 0 {
		t.Errorf("stdout %q stderr %q exit %d", got.stdout.String(), got.stderr.String(), got.exitFrame)
	}
	// Paths cannot leave the sprite's directory.
	req, _ = http.NewRequest(http.MethodGet, s.URL+"/v1/sprites/box/fs/read?path=../../../etc/hostname", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("reading outside the sprite: HTTP %d, want 404", resp.StatusCode)
	}
}

func readFile(t *testing.T, s *Server, path string) (string, int) {
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/v1/sprites/box/fs/read?path="+path, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		if body, code := readFile(t, s, "forever.txt"); code == 200 && body == "done\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a command with max_run_after_disconnect=0 did not outlive its WebSocket")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, code := readFile(t, s, "limited.txt"); code != http.StatusNotFound {
		t.Error("a command past its max_run_after_disconnect was not killed")
	}
}
