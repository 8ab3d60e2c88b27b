package config

import "time"

// Balancing configures latency-weighted load balancing: how observations of answered
// requests become endpoint weights (EDS load_balancing_weight) inside each provider's
// cluster and cluster weights (RDS weighted_clusters) across the providers of one model, and
// when the ext_proc server skips a provider that is failing.
//
// # Observations
//
// For every answered request the ext_proc server records the provider, the endpoint
// (Envoy's upstream.address), the status, the time to the first byte (to the first body
// chunk of a stream, to the response headers otherwise), the total time and the output
// tokens. In one process they reach the balancer directly. With redis.url set, every
// replica appends them to the Redis stream "phogate:obs" (XADD, trimmed to about 100,000
// entries) and every control plane reads the whole stream in order, so all control planes
// fold the same observations; the entry ID's time (Redis's clock) is the observation's time.
//
// # Statistics
//
// Each endpoint keeps moving averages of the time to first byte and of the time per output
// token, and the share of answers that were errors (5xx, resets, connect failures) and 429s.
// An observation replaces the fraction 1 − 2^(−Δt/half_life) of each average (at least
// 0.1), Δt being the time since the endpoint's previous observation. Averages age out with
// a confidence of 2^(−age/(4·half_life)): failure shares decay by it, and an endpoint's
// latency fades by it into its cluster's mean, so an endpoint nobody uses is judged
// neutral again.
//
// # The rule
//
// The cost of an endpoint is its expected answer time for a reference answer of
// reference_tokens output tokens, times its penalties:
//
//	cost = (ttfb + per_token × reference_tokens) × (1 + error_penalty × error_share
//	                                                 + rate_limit_penalty × rate_limit_share)
//
// Its target share of the cluster is proportional to cost^(−sensitivity), raised to at least
// min_weight (a trickle, so that a recovery is seen). Each interval the current shares move
// toward the targets by at most max_step, and not at all while every target is within
// hysteresis of the current share. Shares become integer weights out of 1000. Cluster
// weights of a model follow the same rule, with a provider's cost being the share-weighted
// mean cost of its endpoints.
//
// # Several control planes
//
// With redis.url set, each interval boundary (wall-clock multiples of interval) is one step.
// The first control plane to compute a step stores the resulting shares in the Redis key
// "phogate:balancer:weights"; the others adopt the stored shares for that step. Every
// control plane therefore serves Envoy the same weights, computed from the previous step's
// shared weights.
type Balancing struct {
	// Enabled turns latency-weighted balancing on. Default false: configured weights stand.
	Enabled bool `yaml:"enabled"`
	// Interval is how often weights are recomputed and, when they changed, pushed. Default 1s.
	Interval Duration `yaml:"interval"`
	// HalfLife is the half-life of the moving averages. Default 10s.
	HalfLife Duration `yaml:"half_life"`
	// MinWeight is the least share of its cluster's (or model's) traffic any endpoint (or
	// provider) keeps, from 0 to 1/n. Default 0.05.
	MinWeight float64 `yaml:"min_weight"`
	// MaxStep is the largest change of one share per interval, from 0 to 1. Default 0.25.
	MaxStep float64 `yaml:"max_step"`
	// Hysteresis is the share difference below which weights stay as they are. Default 0.05.
	Hysteresis float64 `yaml:"hysteresis"`
	// Sensitivity is the exponent of the cost in the target share: 1 splits in inverse
	// proportion to cost, 2 (default) favours the fast endpoint more.
	Sensitivity float64 `yaml:"sensitivity"`
	// ReferenceTokens is the answer length at which endpoints are compared. Default 200.
	ReferenceTokens int `yaml:"reference_tokens"`
	// ErrorPenalty multiplies the error share into the cost. Default 4: an endpoint failing
	// every request costs five times its latency.
	ErrorPenalty float64 `yaml:"error_penalty"`
	// RateLimitPenalty multiplies the 429 share into the cost. Default 2.
	RateLimitPenalty float64 `yaml:"rate_limit_penalty"`
	// FailureThreshold is the number of consecutive failed answers (5xx) after which a
	// provider is reported down (metric phogate_balancer_provider_up). Requests keep
	// reaching the other providers through Envoy's retries either way. Default 3.
	FailureThreshold int `yaml:"failure_threshold"`
}

// Balancing defaults.
const (
	DefaultBalancingInterval   = time.Second
	DefaultBalancingHalfLife   = 10 * time.Second
	DefaultBalancingMinWeight  = 0.05
	DefaultBalancingMaxStep    = 0.25
	DefaultBalancingHysteresis = 0.05
	DefaultSensitivity         = 2
	DefaultReferenceTokens     = 200
	DefaultErrorPenalty        = 4
	DefaultRateLimitPenalty    = 2
	DefaultFailureThreshold    = 3
)

func (x *Balancing) applyDefaults(c *Config) {
	setDefault(&x.Interval.Duration, DefaultBalancingInterval)
	setDefault(&x.HalfLife.Duration, DefaultBalancingHalfLife)
	setDefault(&x.MinWeight, DefaultBalancingMinWeight)
	setDefault(&x.MaxStep, DefaultBalancingMaxStep)
	setDefault(&x.Hysteresis, DefaultBalancingHysteresis)
	setDefault(&x.Sensitivity, DefaultSensitivity)
	setDefault(&x.ReferenceTokens, DefaultReferenceTokens)
	setDefault(&x.ErrorPenalty, DefaultErrorPenalty)
	setDefault(&x.RateLimitPenalty, DefaultRateLimitPenalty)
	setDefault(&x.FailureThreshold, DefaultFailureThreshold)
}

func (x *Balancing) validate(v *validator, c *Config) {
	if x.Interval.Duration < 100*time.Millisecond || x.Interval.Duration > time.Hour {
		v.errorf("balancing.interval", "must be between 100ms and 1h")
	}
	if x.HalfLife.Duration < x.Interval.Duration {
		v.errorf("balancing.half_life", "must be at least balancing.interval (%s)",
			x.Interval.Duration)
	}
	if x.MinWeight <= 0 || x.MinWeight > 0.5 {
		v.errorf("balancing.min_weight", "must be above 0 and at most 0.5")
	}
	if x.MaxStep <= 0 || x.MaxStep > 1 {
		v.errorf("balancing.max_step", "must be above 0 and at most 1")
	}
	if x.Hysteresis < 0 || x.Hysteresis >= x.MaxStep {
		v.errorf("balancing.hysteresis", "must be at least 0 and below max_step (%g)", x.MaxStep)
	}
	if x.Sensitivity <= 0 || x.Sensitivity > 8 {
		v.errorf("balancing.sensitivity", "must be above 0 and at most 8")
	}
	if x.ReferenceTokens < 1 {
		v.errorf("balancing.reference_tokens", "must be at least 1")
	}
	if x.ErrorPenalty < 0 || x.RateLimitPenalty < 0 {
		v.errorf("balancing", "error_penalty and rate_limit_penalty must not be negative")
	}
	if x.FailureThreshold < 1 {
		v.errorf("balancing.failure_threshold", "must be at least 1")
	}
}
