package tunnel

import "testing"

func TestParseLookFor(t *testing.T) {
	for _, tt := range []struct {
		out  string
		want uploaded
	}{
		{"gzip\n3723426\n", uploaded{size: 3723426, gzip: true}},
		{"gzip\nnone\n", uploaded{size: -1, gzip: true}},
		{"none\n", uploaded{size: -1}},
		{"3723426\n", uploaded{size: 3723426}},
		{"", uploaded{size: -1}},
		{"sh: 1: stat: not found\nnone", uploaded{size: -1}},
		{"gzip-1.12\n-5\n", uploaded{size: -1}},
	} {
		if got := parseLookFor([]byte(tt.out)); got != tt.want {
			t.Errorf("parseLookFor(%q) = %+v, want %+v", tt.out, got, tt.want)
		}
	}
}
