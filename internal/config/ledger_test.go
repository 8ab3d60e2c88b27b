package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLedgerDefaults(t *testing.T) {
	c, err := Parse([]byte(sectionTestBase))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	want := Ledger{
		Pools:               LedgerPools{Write: 8, Read: 8, Analytics: 2},
		DataDir:             "data",
		EmbeddedPath:        filepath.Join("data", "phogate-ledger.db"),
		SpoolPath:           filepath.Join("data", "phogate-ledger.spool"),
		QueueSize:           10000,
		Batch:               LedgerBatch{MaxRows: 500, MaxDelay: Duration{200 * time.Millisecond}},
		VNDPerUSD:           25000,
		DefaultOutputTokens: 1024,
		ReservationTTL:      Duration{10 * time.Minute},
		Identity: LedgerIdentity{Mode: IdentityAPIKey, Header: "x-phochat-user-id",
			DefaultTier: "default"},
		KeyCache: LedgerKeyCache{Size: 10000, TTL: Duration{time.Minute}},
		Tiers:    []LedgerTier{{Name: "default", OverBudget: OverBudgetReject}},
	}
	if diff := cmp.Diff(want, c.Ledger); diff != "" {
		t.Errorf("ledger defaults (-want +got):\n%s", diff)
	}
}

func TestLedgerReplicaDefaults(t *testing.T) {
	c, err := Parse([]byte(sectionTestBase + `
ledger:
  dsn: postgres://db/phogate
  tiers: [{name: free}]
  api_keys: [{key: sk-x, user: u}]
`))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	l := c.Ledger
	if l.ReplicaDSN != l.DSN || l.AnalyticsDSN != l.DSN {
		t.Errorf("replica and analytics DSNs = %q, %q, want the primary's", l.ReplicaDSN,
			l.AnalyticsDSN)
	}
	if l.APIKeys[0].Tier != "free" || l.Identity.DefaultTier != "free" {
		t.Errorf("key tier %q, default tier %q, want free", l.APIKeys[0].Tier,
			l.Identity.DefaultTier)
	}
}

func TestLedgerErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"bad dsn", "ledger: {dsn: 'mysql://x'}", "ledger.dsn: must be a postgres:// URL"},
		{"replica without primary", "ledger: {replica_dsn: 'postgres://r/x'}",
			"ledger.replica_dsn: needs ledger.dsn"},
		{"pool size", "ledger: {pools: {write: -1}}", "ledger.pools.write: must be between"},
		{"rate", "ledger: {vnd_per_usd: -3}", "ledger.vnd_per_usd: must be above 0"},
		{"batch", "ledger: {batch: {max_rows: 1000000}}", "ledger.batch.max_rows"},
		{"mode", "ledger: {identity: {mode: oauth}}", `ledger.identity.mode: "oauth" must be`},
		{"default tier", "ledger: {identity: {default_tier: gold}}",
			`ledger.identity.default_tier: tier "gold" is not defined`},
		{"duplicate tier", "ledger: {tiers: [{name: a}, {name: a}]}", `tier "a" is defined twice`},
		{"unknown model", "ledger: {tiers: [{name: a, models: [nope]}]}",
			`ledger.tiers[0].models[0]: model "nope" is not defined`},
		{"downgrade needs model", "ledger: {tiers: [{name: a, over_budget: downgrade}]}",
			"ledger.tiers[0].downgrade_to: required"},
		{"over budget", "ledger: {tiers: [{name: a, over_budget: shrug}]}",
			`ledger.tiers[0].over_budget: "shrug" must be`},
		{"negative rpm", "ledger: {tiers: [{name: a, rpm: -1}]}", "ledger.tiers[0].rpm"},
		{"key and env", "ledger: {api_keys: [{key: a, key_env: B, user: u}]}",
			"ledger.api_keys[0]: set exactly one of key and key_env"},
		{"key user", "ledger: {api_keys: [{key: a}]}", "ledger.api_keys[0].user: required"},
		{"key tier", "ledger: {api_keys: [{key: a, user: u, tier: gold}]}",
			`ledger.api_keys[0].tier: tier "gold"`},
		{"user budget", "ledger: {users: [{id: u, monthly_budget_vnd: -1}]}",
			"ledger.users[0].monthly_budget_vnd"},
		{"auth header", "ledger: {identity: {header: Authorization}}",
			"ledger.identity.header: must not be the authorization header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(sectionTestBase + tt.yaml + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLedgerExample(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "envoy", "phogate.yaml"))
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	l := c.Ledger
	if len(l.Tiers) != 3 || l.Identity.DefaultTier != "free" {
		t.Errorf("example tiers = %d, default %q, want 3 and free", len(l.Tiers),
			l.Identity.DefaultTier)
	}
	if len(l.APIKeys) != 1 || l.APIKeys[0].Key.Reveal() != "sk-phogate-demo" ||
		l.APIKeys[0].User != "demo" {
		t.Errorf("example key = %+v, want sk-phogate-demo for demo", l.APIKeys)
	}
}
