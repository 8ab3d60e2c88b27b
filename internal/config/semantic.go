package config

import "time"

// CacheSemantic configures the semantic cache: after an exact miss, a chat request whose
// last user message means the same as an earlier one, with everything else identical, is
// answered with the earlier answer from the exact cache.
type CacheSemantic struct {
	// Enabled turns the semantic cache on. It needs the exact cache, which holds the
	// answers. Default true: with the built-in embedder, its strict guard and the default
	// threshold, precision on the QQP developer pairs is 0.977 (cmd/semantic-eval).
	Enabled *bool `yaml:"enabled"`
	// Embedder is "builtin" (lexical feature hashing in process, no model, microseconds)
	// or "http" (an OpenAI-compatible embeddings API, see HTTP). Default "builtin".
	Embedder string `yaml:"embedder"`
	// HTTP configures the "http" embedder.
	HTTP SemanticHTTPEmbedder `yaml:"http"`
	// Threshold is the cosine similarity a hit needs, in (0, 1]. Default 0.98 with the
	// built-in embedder and 0.95 with an HTTP embedder.
	Threshold float64 `yaml:"threshold"`
	// Thresholds overrides Threshold by model name (the served model).
	Thresholds map[string]float64 `yaml:"thresholds"`
	// MaxEntries bounds the questions kept, over all partitions; the oldest go first.
	// Default 1000000.
	MaxEntries int `yaml:"max_entries"`
	// TTL is how long a question is kept. Default: the longest TTL of the exact cache; an
	// entry whose answer expired from the exact cache is a miss anyway.
	TTL Duration `yaml:"ttl"`
	// Guard rejects near-identical questions that differ in a number, a negation, a toggle
	// or a name; with the built-in embedder it also rejects short questions whose wording
	// differs in more than articles, auxiliaries, plurals and punctuation. Default true.
	Guard *bool `yaml:"guard"`
}

// SemanticHTTPEmbedder configures an OpenAI-compatible embeddings API.
type SemanticHTTPEmbedder struct {
	// BaseURL is the API's base URL, for example "https://api.openai.com/v1"; required
	// with the "http" embedder.
	BaseURL string `yaml:"base_url"`
	// Model is the embedding model. Default "text-embedding-3-small".
	Model string `yaml:"model"`
	// APIKeyEnv names the environment variable holding the API key; empty sends none.
	APIKeyEnv string `yaml:"api_key_env"`
	// Dimensions asks the API for vectors of this size; 0 takes the model's own.
	Dimensions int `yaml:"dimensions"`
	// Timeout bounds one embeddings call. It must leave room in Envoy's message timeout
	// (ext_proc.message_timeout) for the rest of the request phase; a call that fails or
	// times out is a miss. Default 150ms.
	Timeout Duration `yaml:"timeout"`
	// BatchWindow is how long concurrent embeddings wait to be sent as one request.
	// Default 2ms.
	BatchWindow Duration `yaml:"batch_window"`
}

// Semantic embedders.
const (
	SemanticEmbedderBuiltin = "builtin"
	SemanticEmbedderHTTP    = "http"
)

// Semantic cache defaults.
const (
	// DefaultSemanticThresholdBuiltin is the built-in embedder's threshold: with the strict
	// guard, QQP developer-pair precision is 0.977 at 0.98 (0.975 on the held-out half) and
	// no higher at 0.99, which answers a third fewer (cmd/semantic-eval).
	DefaultSemanticThresholdBuiltin = 0.98
	// DefaultSemanticThresholdHTTP suits a model embedder.
	DefaultSemanticThresholdHTTP   = 0.95
	DefaultSemanticMaxEntries      = 1_000_000
	DefaultSemanticHTTPModel       = "text-embedding-3-small"
	DefaultSemanticHTTPTimeout     = 150 * time.Millisecond
	DefaultSemanticHTTPBatchWindow = 2 * time.Millisecond
)

// SemanticEnabled reports whether the semantic cache is on: not turned off, and the exact
// cache on.
func (x *Cache) SemanticEnabled() bool {
	return x.IsEnabled() && (x.Semantic.Enabled == nil || *x.Semantic.Enabled)
}

// GuardEnabled reports whether the guard is on.
func (x *CacheSemantic) GuardEnabled() bool { return x.Guard == nil || *x.Guard }

// ThresholdFor returns the similarity threshold of a served model.
func (x *CacheSemantic) ThresholdFor(model string) float64 {
	if t, ok := x.Thresholds[model]; ok {
		return t
	}
	return x.Threshold
}

func (x *CacheSemantic) applyDefaults(c *Cache) {
	setDefault(&x.Embedder, SemanticEmbedderBuiltin)
	if x.Embedder == SemanticEmbedderHTTP {
		setDefault(&x.Threshold, DefaultSemanticThresholdHTTP)
	} else {
		setDefault(&x.Threshold, DefaultSemanticThresholdBuiltin)
	}
	setDefault(&x.MaxEntries, DefaultSemanticMaxEntries)
	if x.TTL.Duration == 0 {
		x.TTL.Duration = max(c.TTL.Budget.Duration, c.TTL.Standard.Duration,
			c.TTL.Premium.Duration)
		for _, d := range c.TTL.Models {
			x.TTL.Duration = max(x.TTL.Duration, d.Duration)
		}
	}
	setDefault(&x.HTTP.Model, DefaultSemanticHTTPModel)
	setDefault(&x.HTTP.Timeout.Duration, DefaultSemanticHTTPTimeout)
	setDefault(&x.HTTP.BatchWindow.Duration, DefaultSemanticHTTPBatchWindow)
}

func (x *CacheSemantic) validate(v *validator, c *Config) {
	const p = "cache.semantic."
	switch x.Embedder {
	case SemanticEmbedderBuiltin:
	case SemanticEmbedderHTTP:
		if x.HTTP.BaseURL == "" {
			v.errorf(p+"http.base_url", "is required with embedder \"http\"")
		}
	default:
		v.errorf(p+"embedder", "%q must be \"builtin\" or \"http\"", x.Embedder)
	}
	checkThreshold := func(path string, t float64) {
		if t <= 0 || t > 1 {
			v.errorf(path, "must be in (0, 1]")
		}
	}
	checkThreshold(p+"threshold", x.Threshold)
	for _, name := range sortedKeys(x.Thresholds) {
		path := p + "thresholds." + name
		if _, ok := c.Model(name); !ok {
			v.errorf(path, "model %q is not defined under models", name)
		}
		checkThreshold(path, x.Thresholds[name])
	}
	if x.MaxEntries < 1 {
		v.errorf(p+"max_entries", "must be at least 1")
	}
	if x.TTL.Duration < time.Second {
		v.errorf(p+"ttl", "must be at least 1s")
	}
	if x.HTTP.Dimensions < 0 {
		v.errorf(p+"http.dimensions", "must not be negative")
	}
	if t := x.HTTP.Timeout.Duration; t < time.Millisecond || t > time.Minute {
		v.errorf(p+"http.timeout", "must be between 1ms and 1m")
	}
	if w := x.HTTP.BatchWindow.Duration; w > time.Second {
		v.errorf(p+"http.batch_window", "must be at most 1s")
	}
	if x.Embedder == SemanticEmbedderHTTP && c.Cache.SemanticEnabled() &&
		x.HTTP.Timeout.Duration >= c.ExtProc.MessageTimeout.Duration {
		v.errorf(p+"http.timeout", "%s must be shorter than ext_proc.message_timeout (%s)",
			x.HTTP.Timeout.Duration, c.ExtProc.MessageTimeout.Duration)
	}
}
