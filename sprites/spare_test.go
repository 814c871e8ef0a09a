package sprites_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/internal/testsvc"
	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// A Spare dials nothing in the sprite until Start, and the bytes written
// right behind the init reach the target in order.
func TestSpareStartsWithPipelinedData(t *testing.T) {
	e := newEnv(t, spritestest.Options{}, sprites.Options{})
	var accepts atomic.Int64
	echo := testsvc.Serve(t, func(c net.Conn) {
		accepts.Add(1)
		io.Copy(c, c)
	})
	e.sim.Map("db", 6000, echo)
	ctx := context.Background()
	sp, err := e.client.DialSpare(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	defer sp.CloseNow()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sp.Ping(pctx); err != nil || sp.RTT() <= 0 {
		t.Fatalf("ping: %v, rtt %v", err, sp.RTT())
	}
	if n := accepts.Load(); n != 0 {
		t.Fatalf("the target saw %d connections before Start", n)
	}
	if sp.Dead() {
		t.Fatal("a live spare reports dead")
	}
	link, err := sp.Start("localhost", 6000)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	// Written before "connected": the server reads it after its dial.
	if _, err := link.Write([]byte("first bytes")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("first bytes"))
	if _, err := io.ReadFull(link, got); err != nil || string(got) != "first bytes" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if err := link.Connected(ctx); err != nil {
		t.Fatal(err)
	}
	if link.Target() != "10.0.0.1:6000" {
		t.Errorf("target %q", link.Target())
	}
	roundTrip(t, link, "and more")
	if st, _ := e.sim.SpriteStats("db"); st.QueryInits != 0 || accepts.Load() != 1 {
		t.Errorf("query inits %d, target connections %d; want 0 and 1", st.QueryInits, accepts.Load())
	}
	if _, err := sp.Start("localhost", 6000); !errors.Is(err, sprites.ErrSpareUsed) {
		t.Errorf("second Start: %v, want ErrSpareUsed", err)
	}
}

// A started Spare whose port has no listener fails as Dial would.
func TestSpareStartRefused(t *testing.T) {
	e := newEnv(t, spritestest.Options{}, sprites.Options{})
	sp, err := e.client.DialSpare(context.Background(), "db")
	if err != nil {
		t.Fatal(err)
	}
	link, err := sp.Start("localhost", 9)
	if err != nil {
		t.Fatal(err)
	}
	defer link.CloseNow()
	link.Write([]byte("lost with the refused dial"))
	_, rerr := link.Read(make([]byte, 1))
	cerr := link.Connected(context.Background())
	if sprites.ClassOf(rerr) != sprites.Refused || cerr != rerr {
		t.Fatalf("read: %v; connected: %v; want one Refused error", rerr, cerr)
	}
	_, derr := e.client.Dial(context.Background(), "db", "localhost", 9)
	if sprites.ClassOf(derr) != sprites.Refused {
		t.Fatalf("Dial: %v", derr)
	}
}

// A sleep cuts a waiting Spare, and the Spare says so.
func TestSpareDiesWithItsSprite(t *testing.T) {
	e := newEnv(t, spritestest.Options{}, sprites.Options{})
	sp, err := e.client.DialSpare(context.Background(), "db")
	if err != nil {
		t.Fatal(err)
	}
	defer sp.CloseNow()
	if err := e.sim.Sleep("db"); err != nil {
		t.Fatal(err)
	}
	testsvc.Eventually(t, "the spare to notice the sleep", sp.Dead)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := sp.Ping(ctx); err == nil {
		t.Error("a dead spare answered a ping")
	}
	if st, _ := e.sim.SpriteStats("db"); st.Wakes != 0 {
		t.Errorf("%d wakes: noticing a dead spare must not wake its sprite", st.Wakes)
	}
}

// A server that counts open WebSockets as activity keeps a sprite awake
// while a Spare waits, pings or not, and lets it sleep once the Spare
// closes; the default server counts only traffic and pings.
func TestSpareKeepsSpriteAwakeWhereLinksCount(t *testing.T) {
	for _, counts := range []bool{true, false} {
		e := newEnv(t, spritestest.Options{IdleSleep: 200 * time.Millisecond, LinksKeepAwake: counts}, sprites.Options{})
		sp, err := e.client.DialSpare(context.Background(), "db")
		if err != nil {
			t.Fatal(err)
		}
		if counts {
			time.Sleep(600 * time.Millisecond) // three idle periods
			if st, _ := e.sim.SpriteStats("db"); st.Sleeps != 0 || st.WaitingLinks != 1 {
				t.Fatalf("with a waiting link open: %+v", st)
			}
			sp.CloseNow()
		}
		testsvc.Eventually(t, "the sprite to sleep", func() bool {
			st, _ := e.sim.SpriteStats("db")
			return st.Sleeps == 1 && st.WaitingLinks == 0
		})
		if !counts {
			testsvc.Eventually(t, "the sleep to cut the spare", sp.Dead)
		}
		sp.CloseNow()
	}
}
