package config

import (
	"strings"
	"testing"
	"time"
)

const semanticBase = `
providers:
  - {name: a, base_url: http://127.0.0.1:1/v1, models: [m, n]}
models:
  - {name: m, tier: budget}
  - {name: n, tier: premium}
`

func TestSemanticDefaults(t *testing.T) {
	tests := []struct {
		name, yaml string
		enabled    bool
		threshold  float64 // for model m
		thresholdN float64 // for model n
		ttl        time.Duration
		guard      bool
	}{
		{"on by default", "", true, 0.98, 0.98, time.Hour, true},
		{"off", "cache:\n  semantic: {enabled: false}\n", false, 0.98, 0.98, time.Hour, true},
		{"builtin", "cache:\n  semantic: {enabled: true, thresholds: {n: 0.97}}\n",
			true, 0.98, 0.97, time.Hour, true},
		{"http", "cache:\n  semantic: {enabled: true, embedder: http, guard: false, ttl: 5m, " +
			"http: {base_url: 'http://127.0.0.1:2/v1'}}\n",
			true, 0.95, 0.95, 5 * time.Minute, false},
		{"exact cache off", "cache:\n  enabled: false\n  semantic: {enabled: true}\n",
			false, 0.98, 0.98, time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(semanticBase + tt.yaml))
			if err != nil {
				t.Fatalf("Parse() = %v", err)
			}
			s := &c.Cache.Semantic
			if got := c.Cache.SemanticEnabled(); got != tt.enabled {
				t.Errorf("SemanticEnabled() = %v, want %v", got, tt.enabled)
			}
			if got := s.ThresholdFor("m"); got != tt.threshold {
				t.Errorf("ThresholdFor(m) = %v, want %v", got, tt.threshold)
			}
			if got := s.ThresholdFor("n"); got != tt.thresholdN {
				t.Errorf("ThresholdFor(n) = %v, want %v", got, tt.thresholdN)
			}
			if s.TTL.Duration != tt.ttl {
				t.Errorf("TTL = %v, want %v", s.TTL.Duration, tt.ttl)
			}
			if got := s.GuardEnabled(); got != tt.guard {
				t.Errorf("GuardEnabled() = %v, want %v", got, tt.guard)
			}
		})
	}
}

func TestSemanticInvalid(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"{embedder: onnx}", "cache.semantic.embedder"},
		{"{embedder: http}", "cache.semantic.http.base_url"},
		{"{threshold: 1.5}", "cache.semantic.threshold"},
		{"{thresholds: {zz: 0.9}}", "cache.semantic.thresholds.zz"},
		{"{max_entries: -1}", "cache.semantic.max_entries"},
		{"{ttl: 10ms}", "cache.semantic.ttl"},
		{"{enabled: true, embedder: http, http: {base_url: 'http://x/v1', timeout: 5s}}",
			"cache.semantic.http.timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := Parse([]byte(semanticBase + "cache:\n  semantic: " + tt.yaml + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
