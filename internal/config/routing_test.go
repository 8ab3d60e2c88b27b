package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const routingBase = `
providers:
  - name: p
    base_url: http://127.0.0.1:1/v1
    models: [a, b, e]
models:
  - {name: a, tier: budget}
  - {name: b, tier: premium}
  - {name: e, kind: embedding}
ledger:
  tiers:
    - {name: free, models: [a]}
    - {name: pro}
`

func TestRoutingDefaults(t *testing.T) {
	c, err := Parse([]byte(routingBase))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	r := c.Routing
	got := []any{r.AutoModel, r.Candidates, *r.Weights.Quality, *r.Weights.Cost,
		*r.Weights.Speed, *r.Weights.Preference, *r.Complexity.Simple, *r.Complexity.Complex,
		r.LowBudgetRequests, r.ExplicitDisallowedFor("free")}
	want := []any{"auto", []string{"a", "b"}, 0.4, 0.3, 0.2, 0.1, DefaultComplexitySimple,
		DefaultComplexityComplex, DefaultLowBudgetRequests, ExplicitRefuse}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routing defaults (-want +got):\n%s", diff)
	}
}

func TestRoutingTierPolicy(t *testing.T) {
	c, err := Parse([]byte(routingBase + `
routing:
  explicit_disallowed: downgrade
  tiers:
    - {name: free, explicit_disallowed: refuse}
    - {name: pro}
`))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	for tier, want := range map[string]string{
		"free": ExplicitRefuse, "pro": ExplicitDowngrade, "other": ExplicitDowngrade,
	} {
		if got := c.Routing.ExplicitDisallowedFor(tier); got != want {
			t.Errorf("ExplicitDisallowedFor(%q) = %q, want %q", tier, got, want)
		}
	}
}

func TestRoutingValidation(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"weights must sum to 1",
			"weights: {quality: 0.5, cost: 0.3, speed: 0.2, preference: 0.1}",
			"routing.weights: must sum to 1, not 1.1"},
		{"weights within tolerance pass",
			"weights: {quality: 0.405, cost: 0.3, speed: 0.2, preference: 0.1}", ""},
		{"an explicit zero weight is kept",
			"weights: {quality: 0.5, cost: 0.3, speed: 0.2, preference: 0}", ""},
		{"negative weight", "weights: {quality: 1.2, cost: -0.2}",
			"routing.weights.cost: must be between 0 and 1"},
		{"thresholds out of order", "complexity: {simple: 0.6, complex: 0.5}",
			"routing.complexity.complex: must be above simple"},
		{"auto model shadows a model", "auto_model: a",
			`routing.auto_model: "a" is also a configured model`},
		{"unknown candidate", "candidates: [a, zz]",
			`routing.candidates[1]: model "zz" is not defined`},
		{"embedding candidate", "candidates: [e]", `model "e" is not a chat model`},
		{"unknown tier", "tiers: [{name: gold}]",
			`routing.tiers[0].name: tier "gold" is not defined under ledger.tiers`},
		{"bad action", "explicit_disallowed: maybe",
			`routing.explicit_disallowed: "maybe" must be "refuse" or "downgrade"`},
		{"low budget requests", "low_budget_requests: -1",
			"routing.low_budget_requests: must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(routingBase + "routing:\n  " + tt.yaml + "\n"))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Parse() = %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Parse() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
