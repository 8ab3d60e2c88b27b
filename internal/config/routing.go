package config

import (
	"fmt"
	"math"
)

// Routing configures model choice: which model serves a request that names the auto model,
// and what happens when a tier asks for a model it may not use.
//
// A tier's allowed models are ledger.tiers[].models; routing only adds what to do about an
// explicit request for a model outside that list.
type Routing struct {
	// AutoModel is the model name that asks the gateway to choose. Default "auto". It must not
	// be the name of a configured model.
	AutoModel string `yaml:"auto_model"`
	// Candidates are the chat models the router chooses among, before each tier's allowed
	// models narrow them. Default: every chat model under models.
	Candidates []string `yaml:"candidates"`
	// Weights weigh the parts of a candidate's score. They must sum to 1 (within 0.01).
	Weights RoutingWeights `yaml:"weights"`
	// Complexity holds the complexity thresholds that turn a question's complexity score into
	// the quality it needs.
	Complexity RoutingComplexity `yaml:"complexity"`
	// LowBudgetRequests says when a user is near the end of the budget: when the remaining
	// budget pays for fewer than this many requests at the most expensive candidate's
	// estimated cost, cost weighs more, up to three times its weight at zero. Default 50.
	LowBudgetRequests int `yaml:"low_budget_requests"`
	// ExplicitDisallowed is what happens when a request names a model its tier may not use:
	// "refuse" (default: the request fails with a model-not-allowed error) or "downgrade"
	// (the router chooses among the tier's models as for the auto model).
	ExplicitDisallowed string `yaml:"explicit_disallowed"`
	// Tiers override ExplicitDisallowed per tier. Each names a tier under ledger.tiers.
	Tiers []RoutingTier `yaml:"tiers"`
}

// RoutingWeights weigh the parts of a candidate's score, each a number from 0 to 1.
type RoutingWeights struct {
	// Quality weighs the model's expected quality for the question's complexity. Default 0.4.
	Quality *float64 `yaml:"quality"`
	// Cost weighs the estimated cost of the request. Default 0.3.
	Cost *float64 `yaml:"cost"`
	// Speed weighs the measured time to first token and per output token. Default 0.2.
	Speed *float64 `yaml:"speed"`
	// Preference weighs the user's hint (cheap, fast or quality). Default 0.1.
	Preference *float64 `yaml:"preference"`
}

// RoutingComplexity holds complexity thresholds, each a score from 0 to 1.
type RoutingComplexity struct {
	// Simple is the score at or below which any candidate is good enough, so cost and speed
	// decide. Default 0.35.
	Simple *float64 `yaml:"simple"`
	// Complex is the score at or above which the question needs the best candidate's quality.
	// Between the two thresholds the needed quality rises linearly. Default 0.75.
	Complex *float64 `yaml:"complex"`
}

// RoutingTier is one tier's routing policy.
type RoutingTier struct {
	// Name is a tier under ledger.tiers. Required.
	Name string `yaml:"name"`
	// ExplicitDisallowed is "refuse" or "downgrade", as [Routing.ExplicitDisallowed], which is
	// the default.
	ExplicitDisallowed string `yaml:"explicit_disallowed"`
}

// Actions for an explicit request of a model the tier may not use.
const (
	ExplicitRefuse    = "refuse"
	ExplicitDowngrade = "downgrade"
)

// Routing defaults.
const (
	DefaultAutoModel         = "auto"
	DefaultWeightQuality     = 0.4
	DefaultWeightCost        = 0.3
	DefaultWeightSpeed       = 0.2
	DefaultWeightPreference  = 0.1
	DefaultComplexitySimple  = 0.35
	DefaultComplexityComplex = 0.75
	DefaultLowBudgetRequests = 50
	routingWeightTolerance   = 0.01
)

func (x *Routing) applyDefaults(c *Config) {
	setDefault(&x.AutoModel, DefaultAutoModel)
	if len(x.Candidates) == 0 {
		for _, m := range c.Models {
			if m.Kind == KindChat {
				x.Candidates = append(x.Candidates, m.Name)
			}
		}
	}
	setDefaultPtr(&x.Weights.Quality, DefaultWeightQuality)
	setDefaultPtr(&x.Weights.Cost, DefaultWeightCost)
	setDefaultPtr(&x.Weights.Speed, DefaultWeightSpeed)
	setDefaultPtr(&x.Weights.Preference, DefaultWeightPreference)
	setDefaultPtr(&x.Complexity.Simple, DefaultComplexitySimple)
	setDefaultPtr(&x.Complexity.Complex, DefaultComplexityComplex)
	setDefault(&x.LowBudgetRequests, DefaultLowBudgetRequests)
	setDefault(&x.ExplicitDisallowed, ExplicitRefuse)
	for i := range x.Tiers {
		setDefault(&x.Tiers[i].ExplicitDisallowed, x.ExplicitDisallowed)
	}
}

// setDefaultPtr points an unset optional number at v, so that an explicit 0 stays 0.
func setDefaultPtr(p **float64, v float64) {
	if *p == nil {
		*p = &v
	}
}

func (x *Routing) validate(v *validator, c *Config) {
	if m, ok := c.Model(x.AutoModel); ok {
		v.errorf("routing.auto_model", "%q is also a configured model", m.Name)
	}
	x.validateCandidates(v, c)
	x.validateWeights(v)

	simple, complex := *x.Complexity.Simple, *x.Complexity.Complex
	if simple < 0 || simple >= 1 {
		v.errorf("routing.complexity.simple", "must be at least 0 and below 1")
	}
	if complex <= simple || complex > 1 {
		v.errorf("routing.complexity.complex", "must be above simple (%g) and at most 1", simple)
	}
	if x.LowBudgetRequests < 1 {
		v.errorf("routing.low_budget_requests", "must be at least 1")
	}
	validateExplicit(v, "routing.explicit_disallowed", x.ExplicitDisallowed)
	seen := map[string]bool{}
	for i, t := range x.Tiers {
		path := fmt.Sprintf("routing.tiers[%d]", i)
		switch _, ok := c.Ledger.Tier(t.Name); {
		case t.Name == "":
			v.errorf(path+".name", "required")
		case !ok:
			v.errorf(path+".name", "tier %q is not defined under ledger.tiers", t.Name)
		case seen[t.Name]:
			v.errorf(path+".name", "tier %q has two routing policies", t.Name)
		}
		seen[t.Name] = true
		validateExplicit(v, path+".explicit_disallowed", t.ExplicitDisallowed)
	}
}

func (x *Routing) validateCandidates(v *validator, c *Config) {
	if len(x.Candidates) == 0 {
		v.errorf("routing.candidates", "no chat model to route to")
	}
	seen := map[string]bool{}
	for i, name := range x.Candidates {
		path := fmt.Sprintf("routing.candidates[%d]", i)
		m, ok := c.Model(name)
		switch {
		case !ok:
			v.errorf(path, "model %q is not defined under models", name)
		case m.Kind != KindChat:
			v.errorf(path, "model %q is not a chat model", name)
		case seen[name]:
			v.errorf(path, "model %q is listed twice", name)
		}
		seen[name] = true
	}
}

func (x *Routing) validateWeights(v *validator) {
	w := map[string]float64{
		"routing.weights.quality": *x.Weights.Quality, "routing.weights.cost": *x.Weights.Cost,
		"routing.weights.speed":      *x.Weights.Speed,
		"routing.weights.preference": *x.Weights.Preference,
	}
	sum := 0.0
	for _, path := range sortedKeys(w) {
		if w[path] < 0 || w[path] > 1 || math.IsNaN(w[path]) {
			v.errorf(path, "must be between 0 and 1")
		}
		sum += w[path]
	}
	if math.Abs(sum-1) > routingWeightTolerance {
		v.errorf("routing.weights", "must sum to 1, not %g", sum)
	}
}

func validateExplicit(v *validator, path, action string) {
	if action != ExplicitRefuse && action != ExplicitDowngrade {
		v.errorf(path, "%q must be %q or %q", action, ExplicitRefuse, ExplicitDowngrade)
	}
}

// ExplicitDisallowedFor returns the action for an explicit request of a model that tier may
// not use.
func (x *Routing) ExplicitDisallowedFor(tier string) string {
	for _, t := range x.Tiers {
		if t.Name == tier {
			return t.ExplicitDisallowed
		}
	}
	return x.ExplicitDisallowed
}
