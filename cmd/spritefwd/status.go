package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spritefwd/spritefwd/control"
	"github.com/spritefwd/spritefwd/sprites"
)

const statusHelp = `spritefwd status [--json] [-w]: show what the running daemon is doing.

One row per forward: its listen address, sprite:port, mode (direct, mux,
or mux→direct while the agent cannot be deployed), state (listening,
failed, draining; "auto" and the process's name, where known, for the
forwards that auto_forward made), the sprite's last known state and wake, open and total
connections, bytes in (to the sprite) and out, and the last error. Then,
for each mux forward, its agent's state, sessions and deploys, and the
streams resumed after a dropped link with how long each took, and what
the mux streams' windows hold together against mux_memory. Also any
rejected config edit and security warnings. Exits 3 if no daemon runs.`

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", statusHelp, stderr)
	socket := fs.String("socket", control.DefaultSocket(), "the daemon's control socket")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	watch := fs.Bool("w", false, "refresh every second until Ctrl-C")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := control.NewClient(*socket)
	defer c.Close()
	show := func() error {
		st, err := c.Status(context.Background())
		if errors.Is(err, control.ErrNotRunning) {
			return &exitError{code: 3, msg: err.Error()}
		}
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		printStatus(stdout, st, time.Now())
		return nil
	}
	if !*watch {
		return show()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	for {
		if !*asJSON {
			fmt.Fprint(stdout, "\033[H\033[2J") // clear the terminal
		}
		if err := show(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// printStatus writes st as text. Every string in st goes through p first:
// they quote the sprite, the API and config files, none of which may
// move the cursor or clear the screen of whoever runs status.
func printStatus(w io.Writer, st control.Status, now time.Time) {
	p := printable
	fmt.Fprintf(w, "spritefwd %s, pid %d, up %s, config %s\n", p(st.Version), st.PID, age(now, st.Started), p(st.Config))
	fmt.Fprintf(w, "api %s, token from %s", p(st.APIURL), p(st.TokenSource))
	if !st.LastReload.IsZero() {
		fmt.Fprintf(w, ", reloaded %s ago", age(now, st.LastReload))
	}
	if st.MetricsAddr != "" {
		fmt.Fprintf(w, ", metrics http://%s/metrics", p(st.MetricsAddr))
	}
	if st.SOCKSAddr != "" {
		fmt.Fprintf(w, ", socks %s", p(st.SOCKSAddr))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLISTEN\tTARGET\tMODE\tSTATE\tSPRITE\tLAST WAKE\tOPEN\tTOTAL\tIN\tOUT\tLAST ERROR")
	for _, f := range st.Forwards {
		listen := f.Listen
		if len(f.Addrs) > 0 && strings.HasSuffix(f.Listen, ":0") {
			listen = strings.Join(f.Addrs, ",")
		}
		wake := "-"
		if !f.LastWake.IsZero() {
			wake = age(now, f.LastWake) + " ago"
		}
		lastErr := "-"
		if f.LastError != "" {
			lastErr = fmt.Sprintf("%s ago: %s", age(now, f.LastErrorAt), f.LastError)
		}
		if f.BindError != "" {
			lastErr = f.BindError
		}
		mode := string(f.Mode)
		if f.Agent != nil && f.Agent.State == "fallback" {
			mode = "mux→direct"
		}
		// Lingering connections hold a place under max_connections too.
		open := strconv.FormatInt(f.Open, 10)
		if f.Lingering > 0 {
			open += "+" + strconv.FormatInt(f.Lingering, 10)
		}
		state := string(f.State)
		if d := f.Discovered; d != nil {
			state += " (auto"
			if d.Process != "" {
				state += ": " + d.Process
			}
			state += ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p(f.Name), p(listen), p(f.Target), p(mode), p(state),
			p(string(f.SpriteState)), wake, open, f.Total, bytesHuman(f.BytesIn), bytesHuman(f.BytesOut), p(lastErr))
	}
	tw.Flush()
	for _, f := range st.Forwards {
		if a := f.Agent; a != nil {
			fmt.Fprintf(w, "\nmux %s: agent %s, %d streams, %d sessions, %d deploys", p(f.Name), p(a.State), a.Streams, a.Sessions, a.Deploys)
			if a.LastDeploy > 0 {
				fmt.Fprintf(w, " (last took %s)", a.LastDeploy.Round(time.Millisecond))
			}
			fmt.Fprintf(w, ", %d resumptions", f.Resumptions)
			if len(f.ResumeTimes) > 0 {
				var ts []string
				for _, d := range f.ResumeTimes {
					ts = append(ts, d.Round(time.Millisecond).String())
				}
				fmt.Fprintf(w, " (latest took %s)", strings.Join(ts, " "))
			}
			if a.Moved != "" {
				fmt.Fprintf(w, "\n  %s", p(a.Moved))
			}
			if a.Fallback != "" {
				fmt.Fprintf(w, "\n  using direct mode: %s", p(a.Fallback))
			}
			fmt.Fprintln(w)
		}
	}
	// One budget for the whole daemon, so one line, once there is a mux
	// forward to use it.
	for _, f := range st.Forwards {
		if f.Mode == "mux" || st.MuxWindowBytes > 0 {
			fmt.Fprintf(w, "\nmux windows: %s of mux_memory %s (beyond 256KiB per stream)\n", bytesHuman(st.MuxWindowBytes), bytesHuman(st.MuxMemory))
			break
		}
	}
	for _, f := range st.Forwards {
		if n := f.WarmHits + f.WarmMisses + f.WarmFallbacks; n > 0 || f.WarmLinks > 0 {
			fmt.Fprintf(w, "\nwarm %s: %d spare links; of %d connections, %d on a spare, %d dialled fresh, %d fell back from a spare\n",
				p(f.Name), f.WarmLinks, n, f.WarmHits, f.WarmMisses, f.WarmFallbacks)
		}
	}
	// A small limit costs throughput, so it is worth a line; one per sprite.
	small := map[string]bool{}
	for _, f := range st.Forwards {
		sprite, _, _ := strings.Cut(f.Target, ":")
		if m := f.MaxMessage; m.State == string(sprites.LimitRefused) && !small[sprite] {
			small[sprite] = true
			fmt.Fprintf(w, "\nsprite %s reads at most %d bytes per WebSocket message (learned %s ago, %d refusals on live links)\n",
				p(sprite), m.Bytes, age(now, m.Since), m.Refusals)
		}
	}
	if len(st.Forwards) == 0 {
		fmt.Fprintln(w, "(no forwards)")
	}
	if len(st.Rejected) > 0 {
		fmt.Fprintf(w, "\nconfig edit rejected %s ago; the previous config keeps serving:\n", age(now, st.RejectedAt))
		for _, e := range st.Rejected {
			fmt.Fprintln(w, "  "+p(e))
		}
	}
	for _, warn := range st.Warnings {
		fmt.Fprintln(w, "\nwarning: "+p(warn))
	}
}

// printable escapes what a terminal would act on rather than show: control
// characters (ESC, CR, BEL, tab...), invalid UTF-8 and other non-printing
// runes (bidi overrides) become \xNN or \uNNNN. Printable Unicode stays.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if !unicode.IsPrint(r) || r == utf8.RuneError {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteString(s[i : i+n])
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += n
	}
	return b.String()
}

func age(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

const reloadHelp = `spritefwd reload: make the running daemon re-read its config file now.

The daemon also reloads by itself when the file changes, and on SIGHUP. A
config with errors is rejected, and the running one keeps serving; the
errors are printed as file:line:col and the command exits 1.`

func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", reloadHelp, stderr)
	socket := fs.String("socket", control.DefaultSocket(), "the daemon's control socket")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := control.NewClient(*socket)
	defer c.Close()
	res, err := c.Reload(context.Background())
	if errors.Is(err, control.ErrNotRunning) {
		return &exitError{code: 3, msg: err.Error()}
	}
	if err != nil {
		return err
	}
	if !res.OK {
		return &exitError{code: 1, msg: "config rejected; the running config keeps serving:\n" + strings.Join(res.Errors, "\n")}
	}
	fmt.Fprintln(stdout, "config reloaded")
	return nil
}
