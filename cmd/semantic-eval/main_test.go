package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/phochat/phogate/cache/semantic"
)

func TestHalf(t *testing.T) {
	pairs := []pair{{A: "1"}, {A: "2"}, {A: "3"}, {A: "4"}, {A: "5"}}
	tests := []struct {
		which string
		want  []string
	}{
		{halfAll, []string{"1", "2", "3", "4", "5"}},
		{halfTune, []string{"2", "4"}},
		{halfHeldOut, []string{"1", "3", "5"}},
	}
	for _, tt := range tests {
		var got []string
		for _, p := range half(pairs, tt.which) {
			got = append(got, p.A)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("half(%s) lines (-want +got):\n%s", tt.which, diff)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-data", "d", "-half", "held-out", "-guard", "basic"})
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	if o.half != halfHeldOut || o.guard != semantic.GuardBasic {
		t.Errorf("parseFlags half, guard = %q, %d; want %q, %d", o.half, o.guard, halfHeldOut,
			semantic.GuardBasic)
	}
	for _, args := range [][]string{
		{"-data", "d", "-half", "first"},
		{"-data", "d", "-guard", "loose"},
		{"-half", "tune"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", args)
		}
	}
}
