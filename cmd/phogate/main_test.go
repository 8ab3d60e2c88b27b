package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// defaultTestTimeout bounds every test's context. No test here starts a server.
const defaultTestTimeout = 10 * time.Second

// exampleConfig is the example configuration shipped in envoy/, seen from this package.
const exampleConfig = "../../envoy/phogate.yaml"

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// writeConfig writes body to a file in the test's temporary directory and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "phogate.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	return path
}

func TestConfigCheckExample(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := dispatch(testContext(t), []string{"config", "check", exampleConfig}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("dispatch(config check %s) = %v, want nil", exampleConfig, err)
	}
	if got, want := stdout.String(), exampleConfig+": ok ("; !strings.HasPrefix(got, want) {
		t.Errorf("stdout = %q, want it to start with %q", got, want)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr = %q, want empty", stderr.String())
	}
}

func TestConfigCheckBrokenFile(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string // part of the error message
	}{
		{
			name: "syntax error",
			body: "gateway:\n  ext_proc_address: [\n",
			want: "line 2",
		},
		{
			name: "unknown field",
			body: "gateway:\n  ext_proc_address: 127.0.0.1:9002\nbogus_key: 1\n",
			want: "line 3",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.body)
			var stdout, stderr bytes.Buffer
			err := dispatch(testContext(t), []string{"config", "check", path}, &stdout, &stderr)
			if err == nil {
				t.Fatalf("dispatch(config check) = nil, want an error naming %q", tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, tt.want) {
				t.Errorf("dispatch(config check) = %q, want it to name %q and %q", msg, path,
					tt.want)
			}
			if got := exitCode(err); got != 1 {
				t.Errorf("exitCode(%v) = %d, want 1", err, got)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want empty", stdout.String())
			}
		})
	}
}

func TestDispatchUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // part of the error message
	}{
		{name: "unknown flag", args: []string{"-nope"}, want: "-nope"},
		{name: "unknown flag after serve", args: []string{"serve", "-nope"}, want: "-nope"},
		{name: "extra argument", args: []string{"serve", "extra"}, want: `"extra"`},
		{name: "bad log level", args: []string{"-log-level", "loud"}, want: "-log-level"},
		{name: "bad log format", args: []string{"-log-format", "xml"}, want: "-log-format"},
		{name: "config check without file", args: []string{"config", "check"},
			want: "usage: phogate config check FILE"},
		{name: "config check with two files", args: []string{"config", "check", "a", "b"},
			want: "usage: phogate config check FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := dispatch(testContext(t), tt.args, &stdout, &stderr)
			if err == nil {
				t.Fatalf("dispatch(%q) = nil, want a usage error", tt.args)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("dispatch(%q) = %q, want it to contain %q", tt.args, err, tt.want)
			}
			if got := exitCode(err); got != 2 {
				t.Errorf("exitCode(%v) = %d, want 2", err, got)
			}
		})
	}
}
