package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// sectionTestBase is a minimal valid file with one budget and one premium model, shared by the
// section tests of this package.
const sectionTestBase = `
providers:
  - name: openai
    base_url: https://api.openai.com/v1
    models: [cheap, dear]
models:
  - name: cheap
    tier: budget
  - name: dear
    tier: premium
`

func TestCacheDefaults(t *testing.T) {
	c, err := Parse([]byte(sectionTestBase))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	x := &c.Cache
	checks := []struct {
		name      string
		got, want any
	}{
		{"enabled", x.IsEnabled(), true},
		{"case_fold", x.FoldsCase(), true},
		{"collapse.enabled", x.Collapse.IsEnabled(), true},
		{"collapse.wait", x.Collapse.Wait.Duration, 10 * time.Second},
		{"l1_max_bytes", x.L1MaxBytes, int64(256 << 20)},
		{"compress_above", x.CompressAbove, 1024},
		{"ttl cheap", x.TTLFor("cheap", TierBudget), time.Hour},
		{"ttl standard", x.TTLFor("other", TierStandard), 45 * time.Minute},
		{"ttl dear", x.TTLFor("dear", TierPremium), 30 * time.Minute},
		{"scope", x.ScopeFor("cheap", TierBudget), CacheScopeGlobal},
		{"scope.header", x.Scope.Header, "x-phogate-cache-namespace"},
	}
	for _, ch := range checks {
		if diff := cmp.Diff(ch.want, ch.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", ch.name, diff)
		}
	}
}

func TestCacheOverrides(t *testing.T) {
	c, err := Parse([]byte(sectionTestBase + `
cache:
  enabled: false
  case_fold: false
  ttl:
    budget: 2h
    models: {dear: 5m}
  scope:
    default: user
    header: X-Tenant
    tiers: {premium: header}
    models: {cheap: global}
  uncacheable_params: [tools]
  collapse: {enabled: false, wait: 3s}
`))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	x := &c.Cache
	checks := []struct {
		name      string
		got, want any
	}{
		{"enabled", x.IsEnabled(), false},
		{"case_fold", x.FoldsCase(), false},
		{"collapse.enabled", x.Collapse.IsEnabled(), false},
		{"collapse.wait", x.Collapse.Wait.Duration, 3 * time.Second},
		{"ttl cheap", x.TTLFor("cheap", TierBudget), 2 * time.Hour},
		{"ttl dear", x.TTLFor("dear", TierPremium), 5 * time.Minute},
		{"scope cheap", x.ScopeFor("cheap", TierBudget), CacheScopeGlobal},
		{"scope dear", x.ScopeFor("dear", TierPremium), CacheScopeHeader},
		{"scope other", x.ScopeFor("other", TierStandard), CacheScopeUser},
		{"scope.header", x.Scope.Header, "x-tenant"},
		{"uncacheable", x.UncacheableParams, []string{"tools"}},
	}
	for _, ch := range checks {
		if diff := cmp.Diff(ch.want, ch.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", ch.name, diff)
		}
	}
}

func TestCacheErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"small l1", "cache: {l1_max_bytes: 10}", "cache.l1_max_bytes: must be at least"},
		{"ttl", "cache: {ttl: {premium: 10ms}}", "cache.ttl.premium: must be at least 1s"},
		{"ttl model", "cache: {ttl: {models: {nope: 1m}}}", `model "nope" is not defined`},
		{"scope", "cache: {scope: {default: team}}", `cache.scope.default: "team" must be`},
		{"scope tier", "cache: {scope: {tiers: {gold: user}}}", `"gold" is not a tier`},
		{"scope model", "cache: {scope: {models: {cheap: x}}}", `cache.scope.models.cheap: "x"`},
		{"param", `cache: {uncacheable_params: [""]}`, "uncacheable_params[0]: must not be empty"},
		{"wait", "cache: {collapse: {wait: 1h}}", "cache.collapse.wait: must be between"},
		{"compress", "cache: {compress_above: 1}", "cache.compress_above: must be at least 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(sectionTestBase + tt.yaml + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) = %v, want error containing %q", tt.yaml, err, tt.want)
			}
		})
	}
}

func TestCacheExample(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "envoy", "phogate.yaml"))
	if err != nil {
		t.Fatalf("Load(example) = %v", err)
	}
	if got := c.Cache.TTLFor("gpt-4o", TierPremium); got != 20*time.Minute {
		t.Errorf("TTLFor(gpt-4o) = %v, want 20m", got)
	}
}

func TestMaxMessageTimeout(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		want  time.Duration
	}{
		{"defaults", "", 11 * time.Second},
		{"custom", "ext_proc: {message_timeout: 2s}\ncache: {collapse: {wait: 3s}}\n", 5 * time.Second},
		{"collapse off", "cache: {collapse: {enabled: false}}\n", 0},
		{"cache off", "cache: {enabled: false}\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(sectionTestBase + tt.extra))
			if err != nil {
				t.Fatalf("Parse = %v", err)
			}
			if got := c.MaxMessageTimeout(); got != tt.want {
				t.Errorf("MaxMessageTimeout() = %v, want %v", got, tt.want)
			}
		})
	}
}
