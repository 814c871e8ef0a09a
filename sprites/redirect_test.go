package sprites_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spritefwd/spritefwd/sprites"
)

// A redirect must never carry the token to another scheme or host. Go's
// own client keeps Authorization on a redirect to the same host name on
// another port, and from https to http, so both servers here are on
// 127.0.0.1: without the client's CheckRedirect, the other one is sent
// the token.
func TestRedirectKeepsTokenHome(t *testing.T) {
	var leaked atomic.Value // the Authorization the other server saw
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			leaked.Store(r.Method + " " + r.URL.Path + ": " + a)
		}
		w.Write([]byte(`{"name":"db","status":"running"}`))
	}))
	defer other.Close()
	redirectTo := func(base string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, base+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		})
	}
	plain := httptest.NewServer(redirectTo(other.URL))
	defer plain.Close()
	tlsAPI := httptest.NewTLSServer(redirectTo(other.URL))
	defer tlsAPI.Close()

	calls := []struct {
		name string
		call func(ctx context.Context, c *sprites.Client) error
		// permanent: the failure says what it is; exec and fs calls
		// report it as a network error, which is still no leak.
		permanent bool
	}{
		{"get", func(ctx context.Context, c *sprites.Client) error { _, err := c.Get(ctx, "db"); return err }, true},
		{"proxy", func(ctx context.Context, c *sprites.Client) error {
			l, err := c.Dial(ctx, "db", "localhost", 5432)
			if err == nil {
				l.Close()
			}
			return err
		}, true},
		{"fs", func(ctx context.Context, c *sprites.Client) error {
			_, err := c.ReadFile(ctx, "db", "/etc/hostname")
			return err
		}, false},
		{"exec", func(ctx context.Context, c *sprites.Client) error {
			s, err := c.Exec(ctx, "db", sprites.ExecOptions{Cmd: []string{"true"}})
			if err == nil {
				s.Close()
			}
			return err
		}, false},
	}
	for _, api := range []struct {
		name string
		srv  *httptest.Server
	}{{"another port", plain}, {"https to http", tlsAPI}} {
		for _, tc := range calls {
			t.Run(api.name+"/"+tc.name, func(t *testing.T) {
				leaked.Store("")
				c, err := sprites.New(sprites.Options{APIURL: api.srv.URL, Token: token, HTTPClient: api.srv.Client(), HandshakeTimeout: 5 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				err = tc.call(ctx, c)
				if l := leaked.Load().(string); l != "" {
					t.Fatalf("the token followed the redirect: %s", l)
				}
				if err == nil || !strings.Contains(err.Error(), "redirect") {
					t.Fatalf("err = %v, want a refused redirect", err)
				}
				if tc.permanent && (!errors.Is(err, sprites.ErrRedirect) || !sprites.IsPermanent(err)) {
					t.Errorf("err = %v (class %v), want a permanent ErrRedirect", err, sprites.ClassOf(err))
				}
				if strings.Contains(err.Error(), token) {
					t.Errorf("the error shows the token: %v", err)
				}
			})
		}
	}

	// A redirect that stays on the API's scheme, host and port is followed.
	var got atomic.Value
	got.Store("")
	home := http.NewServeMux()
	home.HandleFunc("/v1/sprites/db", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/v2/sprites/db", http.StatusTemporaryRedirect)
	})
	home.HandleFunc("/v2/sprites/db", func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("Authorization"))
		w.Write([]byte(`{"name":"db","status":"running"}`))
	})
	same := httptest.NewServer(home)
	defer same.Close()
	c, err := sprites.New(sprites.Options{APIURL: same.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s, err := c.Get(context.Background(), "db"); err != nil || s.Name != "db" || got.Load() != "Bearer "+token {
		t.Errorf("same-origin redirect: %+v, %v, Authorization %q", s, err, got.Load())
	}
}
