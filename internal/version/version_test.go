package version

import "testing"

func TestOf(t *testing.T) {
	if got := Of("v1.2.3"); got != "v1.2.3" {
		t.Errorf("Of(v1.2.3) = %q", got)
	}
	// A test binary's main module is "(devel)": nothing recorded.
	if got := Of(""); got != "dev" {
		t.Errorf("Of(\"\") = %q, want dev", got)
	}
}
