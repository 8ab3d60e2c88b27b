package cache

import (
	"time"

	"github.com/phochat/phogate/internal/config"
)

// Policy holds the per-request cache decisions taken from the configuration: whether to
// cache, the key options, the scope and the TTL of each model. It is read-only after
// [PolicyFromConfig] and safe for concurrent use.
type Policy struct {
	// Enabled turns the exact cache on.
	Enabled bool
	// Key are the options for [BuildKey].
	Key KeyOptions
	// ScopeHeader is the lower-case request header that carries the "header" scope's
	// namespace.
	ScopeHeader string

	cfg   *config.Cache
	tiers map[string]string // model → tier
}

// PolicyFromConfig builds the policy of a loaded configuration.
func PolicyFromConfig(c *config.Config) *Policy {
	p := &Policy{
		Enabled: c.Cache.IsEnabled(),
		Key: KeyOptions{
			CaseFold:    c.Cache.FoldsCase(),
			Uncacheable: c.Cache.UncacheableParams,
		},
		ScopeHeader: c.Cache.Scope.Header,
		cfg:         &c.Cache,
		tiers:       map[string]string{},
	}
	for _, m := range c.Models {
		p.tiers[m.Name] = m.Tier
	}
	return p
}

// OptionsFromConfig returns the [Options] a configuration asks for, without the Redis client,
// logger and metrics, which the caller adds.
func OptionsFromConfig(c *config.Config) Options {
	return Options{
		RedisTimeout:  c.Redis.Timeout.Duration,
		L1MaxBytes:    c.Cache.L1MaxBytes,
		CompressAbove: c.Cache.CompressAbove,
		Collapse:      c.Cache.Collapse.IsEnabled(),
		CollapseWait:  c.Cache.Collapse.Wait.Duration,
	}
}

// TTL returns how long answers of the served model are stored.
func (p *Policy) TTL(model string) time.Duration {
	return p.cfg.TTLFor(model, p.tier(model))
}

// Scope returns the scope argument of [BuildKey] for a request to the served model, given the
// authenticated user and the value of the [Policy.ScopeHeader] header. It returns false when
// the model's scope needs a user or namespace that the request lacks; the request is then not
// cached, so that answers never cross from one user or namespace to another.
//
// The scopes are "global", "user:<user>" and "ns:<namespace>"; they are hashed into the key,
// never used as metric labels.
func (p *Policy) Scope(model, user, namespace string) (string, bool) {
	switch p.cfg.ScopeFor(model, p.tier(model)) {
	case config.CacheScopeUser:
		return "user:" + user, user != ""
	case config.CacheScopeHeader:
		return "ns:" + namespace, namespace != ""
	}
	return config.CacheScopeGlobal, true
}

func (p *Policy) tier(model string) string {
	if t, ok := p.tiers[model]; ok {
		return t
	}
	return config.TierStandard
}
