package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// The token rides every API call: plain http is for the emulator on
// loopback, unless the user says otherwise, on the command line too.
func TestForwardRefusesPlainHTTP(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"forward", "--api-url", "http://api.sprites.dev", "db", "5432"}, "--allow-insecure-http"},
		{[]string{"forward", "--api-url", "http://10.1.2.3:7070/", "db", "5432"}, "plain http sends the token in clear"},
		{[]string{"forward", "--api-url", "ftp://api.sprites.dev", "db", "5432"}, "must start with https://"},
	} {
		var out bytes.Buffer
		err := dispatch(tt.args, &out, &out)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(ee.msg, tt.want) {
			t.Errorf("%v: %v, want exit 2 with %q", tt.args, err, tt.want)
		}
	}
}
