package config

import (
	"fmt"
	"strings"
	"time"
)

// Cache configures the exact response cache: which requests are cached, under which scope, for
// how long, and how it uses memory and Redis. Redis is the top-level redis section; the cache
// uses it as its second layer when its URL is set, with redis.timeout bounding each call.
type Cache struct {
	// Enabled turns the exact cache on. Default true.
	Enabled *bool `yaml:"enabled"`
	// L1MaxBytes bounds the in-process layer, counting each stored answer's JSON size.
	// Default 256 MiB.
	L1MaxBytes int64 `yaml:"l1_max_bytes"`
	// TTL says how long answers are stored, by model tier and by model.
	TTL CacheTTL `yaml:"ttl"`
	// CaseFold lower-cases message text before hashing, so "Hello" and "hello" share an
	// answer. Default true.
	CaseFold *bool `yaml:"case_fold"`
	// Scope says who shares answers.
	Scope CacheScope `yaml:"scope"`
	// UncacheableParams names request parameters whose presence makes a request uncacheable,
	// for example ["tools"]. Requests with n > 1 are never cached. Default none.
	UncacheableParams []string `yaml:"uncacheable_params"`
	// Collapse configures collapsing of identical requests in flight.
	Collapse CacheCollapse `yaml:"collapse"`
	// CompressAbove compresses stored answers whose JSON is larger than this, in bytes.
	// Default 1024.
	CompressAbove int `yaml:"compress_above"`
	// Semantic configures the semantic cache, which runs after an exact miss.
	Semantic CacheSemantic `yaml:"semantic"`
}

// CacheTTL is how long answers are stored. A model's entry in Models wins over its tier's.
type CacheTTL struct {
	// Budget is the TTL of budget-tier models. Default 1h.
	Budget Duration `yaml:"budget"`
	// Standard is the TTL of standard-tier models. Default 45m.
	Standard Duration `yaml:"standard"`
	// Premium is the TTL of premium-tier models. Default 30m.
	Premium Duration `yaml:"premium"`
	// Models overrides the TTL of single models, by model name.
	Models map[string]Duration `yaml:"models"`
}

// CacheScope says who shares cached answers: "global" (every caller), "user" (each
// authenticated user has their own answers) or "header" (callers that send the same value of
// Header share answers). Models wins over Tiers, which wins over Default.
type CacheScope struct {
	// Default is the scope of every model without an override. Default "global".
	Default string `yaml:"default"`
	// Header is the request header that carries the namespace of the "header" scope,
	// matched case-insensitively. Default "x-phogate-cache-namespace".
	Header string `yaml:"header"`
	// Tiers overrides the scope by model tier ("budget", "standard", "premium").
	Tiers map[string]string `yaml:"tiers"`
	// Models overrides the scope by model name.
	Models map[string]string `yaml:"models"`
}

// CacheCollapse configures collapsing: of identical requests in flight, only the first goes
// upstream and the others wait for its answer, across replicas when Redis is configured.
type CacheCollapse struct {
	// Enabled turns collapsing on. Default true.
	Enabled *bool `yaml:"enabled"`
	// Wait bounds how long a request waits for the identical one before going upstream
	// itself. Default 10s.
	Wait Duration `yaml:"wait"`
}

// Cache scopes.
const (
	CacheScopeGlobal = "global"
	CacheScopeUser   = "user"
	CacheScopeHeader = "header"
)

// Cache defaults.
const (
	DefaultCacheL1MaxBytes    = 256 << 20
	DefaultCacheCompressAbove = 1024
	DefaultCacheScopeHeader   = "x-phogate-cache-namespace"
	DefaultCacheCollapseWait  = 10 * time.Second
)

// Default cache TTLs by tier.
var defaultCacheTTL = map[string]time.Duration{
	TierBudget:   time.Hour,
	TierStandard: 45 * time.Minute,
	TierPremium:  30 * time.Minute,
}

// IsEnabled reports whether the exact cache is on.
func (x *Cache) IsEnabled() bool { return x.Enabled == nil || *x.Enabled }

// FoldsCase reports whether message text is lower-cased before hashing.
func (x *Cache) FoldsCase() bool { return x.CaseFold == nil || *x.CaseFold }

// IsEnabled reports whether collapsing is on.
func (x *CacheCollapse) IsEnabled() bool { return x.Enabled == nil || *x.Enabled }

// TTLFor returns the TTL of a model in a tier.
func (x *Cache) TTLFor(model, tier string) time.Duration {
	if d, ok := x.TTL.Models[model]; ok {
		return d.Duration
	}
	switch tier {
	case TierBudget:
		return x.TTL.Budget.Duration
	case TierPremium:
		return x.TTL.Premium.Duration
	}
	return x.TTL.Standard.Duration
}

// ScopeFor returns the scope of a model in a tier.
func (x *Cache) ScopeFor(model, tier string) string {
	if s, ok := x.Scope.Models[model]; ok {
		return s
	}
	if s, ok := x.Scope.Tiers[tier]; ok {
		return s
	}
	return x.Scope.Default
}

func (x *Cache) applyDefaults(c *Config) {
	setDefault(&x.L1MaxBytes, DefaultCacheL1MaxBytes)
	setDefault(&x.CompressAbove, DefaultCacheCompressAbove)
	setDefault(&x.TTL.Budget.Duration, defaultCacheTTL[TierBudget])
	setDefault(&x.TTL.Standard.Duration, defaultCacheTTL[TierStandard])
	setDefault(&x.TTL.Premium.Duration, defaultCacheTTL[TierPremium])
	setDefault(&x.Scope.Default, CacheScopeGlobal)
	setDefault(&x.Scope.Header, DefaultCacheScopeHeader)
	x.Scope.Header = strings.ToLower(x.Scope.Header)
	setDefault(&x.Collapse.Wait.Duration, DefaultCacheCollapseWait)
	x.Semantic.applyDefaults(x)
}

func (x *Cache) validate(v *validator, c *Config) {
	if x.L1MaxBytes < 1<<20 {
		v.errorf("cache.l1_max_bytes", "must be at least 1048576 (1 MiB)")
	}
	if x.CompressAbove < 64 {
		v.errorf("cache.compress_above", "must be at least 64")
	}
	for _, tier := range []struct {
		name string
		d    Duration
	}{{"budget", x.TTL.Budget}, {"standard", x.TTL.Standard}, {"premium", x.TTL.Premium}} {
		if tier.d.Duration < time.Second {
			v.errorf("cache.ttl."+tier.name, "must be at least 1s")
		}
	}
	for _, name := range sortedKeys(x.TTL.Models) {
		path := "cache.ttl.models." + name
		if _, ok := c.Model(name); !ok {
			v.errorf(path, "model %q is not defined under models", name)
		}
		if x.TTL.Models[name].Duration < time.Second {
			v.errorf(path, "must be at least 1s")
		}
	}
	x.validateScope(v, c)
	for i, p := range x.UncacheableParams {
		if p == "" {
			v.errorf(fmt.Sprintf("cache.uncacheable_params[%d]", i), "must not be empty")
		}
	}
	if w := x.Collapse.Wait.Duration; w < 10*time.Millisecond || w > 5*time.Minute {
		v.errorf("cache.collapse.wait", "must be between 10ms and 5m")
	}
	x.Semantic.validate(v, c)
}

func (x *Cache) validateScope(v *validator, c *Config) {
	check := func(path, s string) {
		switch s {
		case CacheScopeGlobal, CacheScopeUser, CacheScopeHeader:
		default:
			v.errorf(path, "%q must be \"global\", \"user\" or \"header\"", s)
		}
	}
	check("cache.scope.default", x.Scope.Default)
	for _, tier := range sortedKeys(x.Scope.Tiers) {
		if _, ok := defaultCacheTTL[tier]; !ok {
			v.errorf("cache.scope.tiers."+tier, "%q is not a tier (budget, standard, premium)",
				tier)
		}
		check("cache.scope.tiers."+tier, x.Scope.Tiers[tier])
	}
	for _, name := range sortedKeys(x.Scope.Models) {
		if _, ok := c.Model(name); !ok {
			v.errorf("cache.scope.models."+name, "model %q is not defined under models", name)
		}
		check("cache.scope.models."+name, x.Scope.Models[name])
	}
}

// MaxMessageTimeout is the longest time the ext_proc server may ask Envoy to wait for one
// reply, published as the filter's max_message_timeout: the collapse wait plus one message
// timeout, so that a request that waited for an identical one in flight still has a whole
// message timeout to go upstream. It is 0, which leaves the feature off, when the cache or
// collapsing is off. Envoy accepts at most one hour.
func (c *Config) MaxMessageTimeout() time.Duration {
	if !c.Cache.IsEnabled() || !c.Cache.Collapse.IsEnabled() {
		return 0
	}
	return min(c.Cache.Collapse.Wait.Duration+c.ExtProc.MessageTimeout.Duration, time.Hour)
}
