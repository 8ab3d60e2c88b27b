package main

import (
	"bytes"
	"compress/gzip"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	fixtureGSM8K = `{"id": "gsm8k-0000", "prompt": "Tom has 3 apples and buys 5 more. ` +
		`How many apples does he have?", "strong_ok": true, "weak_ok": false, "gold": 8, ` +
		`"contaminated": false, "request_tokens": 1000, "strong_tokens": 100, ` +
		`"weak_tokens": 50}` + "\n" +
		`{"id": "gsm8k-0001", "prompt": "What is 2 + 2?", "strong_ok": true, ` +
		`"weak_ok": true, "gold": 4, "contaminated": true, "request_tokens": 1000, ` +
		`"strong_tokens": 100, "weak_tokens": 50}` + "\n"
	fixtureMTBench = `{"id": "mt_bench-81", "prompt": "Write a haiku about spring.", ` +
		`"strong_score": 9.0, "weak_score": 9.5, "contaminated": false, ` +
		`"prompt_tokens": [10, 5], "strong_tokens": [100, 50], "weak_tokens": [80, 40]}` +
		"\n" +
		`{"id": "mt_bench-82", "prompt": "Prove that there are infinitely many primes. ` +
		`Explain step by step why the proof works.", "strong_score": 10.0, ` +
		`"weak_score": 6.0, "contaminated": false, "prompt_tokens": [20, 5], ` +
		`"strong_tokens": [300, 100], "weak_tokens": [200, 100]}` + "\n"
	fixturePrices = `{"models": {"strong-m": {"input": 10, "output": 30}, ` +
		`"weak-m": {"input": 1, "output": 2}}}`
)

func writeFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "routing-dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{gsm8kFile: fixtureGSM8K, mtBenchFile: fixtureMTBench}
	for name, body := range files {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write([]byte(body))
		zw.Close()
		if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := os.WriteFile(filepath.Join(dir, pricesFile), []byte(fixturePrices), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReaders(t *testing.T) {
	dir := writeFixture(t)
	gsm, err := readGSM8K(filepath.Join(dir, gsm8kFile))
	if err != nil {
		t.Fatalf("readGSM8K = %v", err)
	}
	mt, err := readMTBench(filepath.Join(dir, mtBenchFile))
	if err != nil {
		t.Fatalf("readMTBench = %v", err)
	}
	got := []any{len(gsm), gsm[0].strongQ, gsm[0].weakQ, gsm[0].strongTok, gsm[1].contaminated,
		len(mt), mt[1].weakQ, mt[0].strongTok}
	// MT-Bench turn 2 input: both prompts and the first answer (10+100+5), plus turn 1's 10.
	want := []any{2, 1.0, 0.0, tokens{1000, 100}, true, 2, 6.0, tokens{125, 150}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(tokens{})); diff != "" {
		t.Errorf("readers (-want +got):\n%s", diff)
	}
}

func TestRunPrintsTables(t *testing.T) {
	dir := writeFixture(t)
	var out, errOut bytes.Buffer
	args := []string{"-data", dir, "-strong-price", "strong-m", "-weak-price", "weak-m"}
	if err := run(args, &out, &errOut); err != nil {
		t.Fatalf("run() = %v; stderr %s", err, errOut.String())
	}
	for _, want := range []string{
		"GSM8K (2 prompts", "MT-Bench (2 prompts",
		"| always strong | 100.0% | 1.000 |", "| always weak | 0.0% | 0.500 |",
		"| oracle (bound) | 50.0% | 1.000 |", "| router (defaults) |",
		"| always weak | 0.0% | 7.75 |", "| oracle (bound) | 50.0% | 9.75 |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run() output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunFailsWithoutData(t *testing.T) {
	tests := []struct {
		name  string
		dir   func(t *testing.T) string
		price string // prices.json model for the weak model
		want  string
	}{
		{"missing directory", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "nope")
		}, "weak-m", "has no routing-dev/gsm8k.jsonl.gz"},
		{"unknown price", writeFixture, "gpt-3.5-turbo", `no price for model "gpt-3.5-turbo"`},
		{"corrupt file", func(t *testing.T) string {
			dir := writeFixture(t)
			os.WriteFile(filepath.Join(dir, mtBenchFile), []byte("not gzip"), 0o644)
			return dir
		}, "weak-m", "mt-bench.jsonl.gz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := []string{"-data", tt.dir(t), "-strong-price", "strong-m",
				"-weak-price", tt.price}
			err := run(args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestOracleAt(t *testing.T) {
	items := []item{{strongQ: 1, weakQ: 0}, {strongQ: 0, weakQ: 1}, {strongQ: 1, weakQ: 1}}
	for k, want := range []float64{2.0 / 3, 1, 1, 1} {
		if got := oracleAt(items, k); math.Abs(got-want) > 1e-12 {
			t.Errorf("oracleAt(items, %d) = %g, want %g", k, got, want)
		}
	}
}
