// Package config defines phogate's YAML configuration file: its types, defaults, loading with
// errors that name the field and line, and validation.
//
// One file configures the whole gateway: the Envoy listener that the xDS server publishes, the
// addresses the phogate process serves on, the model providers and their endpoints, the models
// with their prices, and the cache, ledger, routing and balancing settings.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole gateway configuration. The zero value is not useful; use [Load] or
// [Parse], which fill in defaults and validate.
type Config struct {
	// Listener is the client-facing Envoy listener published over xDS.
	Listener Listener `yaml:"listener"`
	// Gateway holds the addresses of the phogate process itself.
	Gateway Gateway `yaml:"gateway"`
	// ExtProc configures the Envoy ext_proc filter and the ext_proc server.
	ExtProc ExtProc `yaml:"ext_proc"`
	// Providers are the upstream model providers, in fallback order.
	Providers []Provider `yaml:"providers"`
	// Models are the models clients may ask for, with prices and tiers.
	Models []Model `yaml:"models"`
	// Cache configures the exact and semantic response caches.
	Cache Cache `yaml:"cache"`
	// Ledger configures usage accounting, identity and budgets.
	Ledger Ledger `yaml:"ledger"`
	// Routing configures model choice.
	Routing Routing `yaml:"routing"`
	// Balancing configures latency-weighted load balancing through xDS.
	Balancing Balancing `yaml:"balancing"`
	// Redis is the shared store used when several gateway replicas run. Empty URL means none:
	// every replica keeps its state in process.
	Redis Redis `yaml:"redis"`
}

// Listener is the client-facing Envoy listener.
type Listener struct {
	// Address is the IP address Envoy binds. Default "0.0.0.0".
	Address string `yaml:"address"`
	// Port is the TCP port Envoy binds. Default 8080.
	Port int `yaml:"port"`
	// MaxRequestBytes bounds a buffered request body; larger bodies get 413 from Envoy.
	// Default 1 MiB.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// StreamIdleTimeout resets a stream with no activity for this long. Default 5m.
	StreamIdleTimeout Duration `yaml:"stream_idle_timeout"`
	// UpstreamTimeout bounds a whole upstream answer; 0 means none, which suits long streams.
	// Default 0.
	UpstreamTimeout Duration `yaml:"upstream_timeout"`
	// Retries is the number of retries Envoy makes on connect failure, reset, 5xx and 429,
	// each on another host when one exists. Default 2.
	Retries *int `yaml:"retries"`
}

// Gateway holds the addresses the phogate process listens on and how Envoy reaches it.
type Gateway struct {
	// ExtProcAddress is where the ext_proc gRPC server listens. Default "127.0.0.1:9002".
	ExtProcAddress string `yaml:"ext_proc_address"`
	// ExtProcClusterAddress is how Envoy reaches the ext_proc server. Default: ExtProcAddress,
	// with an unspecified host replaced by 127.0.0.1.
	ExtProcClusterAddress string `yaml:"ext_proc_cluster_address"`
	// XDSAddress is where the xDS (ADS) server listens. Default "127.0.0.1:18000".
	XDSAddress string `yaml:"xds_address"`
	// AdminAddress serves /metrics and /healthz. Default "127.0.0.1:9090".
	AdminAddress string `yaml:"admin_address"`
	// ShutdownTimeout bounds graceful shutdown. Default 10s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// ExtProc configures Envoy's ext_proc filter and phogate's handling of requests.
type ExtProc struct {
	// FailureMode is "open" (default): when phogate is down or late, Envoy sends the request
	// upstream unprocessed, so chat keeps working without caching, budgets or routing; or
	// "closed": Envoy answers 500 (504 on a message timeout) instead.
	FailureMode string `yaml:"failure_mode"`
	// MessageTimeout is how long Envoy waits for each ext_proc reply. Default 1s.
	MessageTimeout Duration `yaml:"message_timeout"`
	// MaxBodyBytes is the largest request body phogate accepts; larger bodies get 413.
	// Default: Listener.MaxRequestBytes.
	MaxBodyBytes int `yaml:"max_body_bytes"`
}

// FailOpen reports whether Envoy continues without ext_proc when phogate fails.
func (e ExtProc) FailOpen() bool { return e.FailureMode != "closed" }

// Provider is one upstream model provider: an OpenAI-compatible API at one or more endpoints.
type Provider struct {
	// Name identifies the provider in routes, metrics and logs. Required; letters, digits,
	// '-' and '_'.
	Name string `yaml:"name"`
	// BaseURL is the provider's API root, for example "https://api.openai.com/v1". Its path is
	// the prefix that replaces the client's "/v1". Required.
	BaseURL string `yaml:"base_url"`
	// Endpoints are the host:port addresses serving BaseURL. Default: BaseURL's host and port.
	Endpoints []Endpoint `yaml:"endpoints"`
	// APIKeyEnv names the environment variable holding the provider's API key. Empty means
	// the provider needs no key.
	APIKeyEnv string `yaml:"api_key_env"`
	// AuthHeader is the header that carries the key. Default "authorization", sent as
	// "Bearer <key>"; any other header carries the bare key.
	AuthHeader string `yaml:"auth_header"`
	// Models are the models this provider serves.
	Models []ProviderModel `yaml:"models"`
	// Priority orders providers of one model for fallback: 0 is tried first. Default 0.
	Priority int `yaml:"priority"`

	// APIKey is resolved from APIKeyEnv by [Config.ResolveSecrets]; never logged.
	APIKey Secret `yaml:"-"`
	// parsed is BaseURL parsed.
	parsed *url.URL
}

// Endpoint is one address of a provider.
type Endpoint struct {
	// Address is host:port.
	Address string `yaml:"address"`
	// Weight is the initial load-balancing weight, at least 1. Default 1.
	Weight int `yaml:"weight"`
}

// UnmarshalYAML accepts either a plain "host:port" string or a mapping.
func (e *Endpoint) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		e.Address = n.Value
		return nil
	}
	type plain Endpoint
	return n.Decode((*plain)(e))
}

// ProviderModel is a model served by a provider.
type ProviderModel struct {
	// Name is the model's name in [Config.Models].
	Name string `yaml:"name"`
	// UpstreamName is the provider's own name for it, when different.
	UpstreamName string `yaml:"upstream_name"`
}

// UnmarshalYAML accepts either a plain model name or a mapping.
func (m *ProviderModel) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		m.Name = n.Value
		return nil
	}
	type plain ProviderModel
	return n.Decode((*plain)(m))
}

// Upstream returns the name the provider uses for the model.
func (m ProviderModel) Upstream() string {
	if m.UpstreamName != "" {
		return m.UpstreamName
	}
	return m.Name
}

// Model is a model clients may name in requests.
type Model struct {
	// Name is what clients send in the request's "model". Required.
	Name string `yaml:"name"`
	// Kind is "chat" (default) or "embedding".
	Kind string `yaml:"kind"`
	// Tier is the model's price class: "budget", "standard" or "premium". Default "standard".
	Tier string `yaml:"tier"`
	// Price is the model's list price in USD per one million tokens.
	Price Price `yaml:"price"`
	// Quality is the model's answer quality from 0 to 1, used by routing. Default by tier.
	Quality float64 `yaml:"quality"`
}

// Price is a price in USD per one million tokens.
type Price struct {
	// Input is the price of prompt tokens.
	Input float64 `yaml:"input"`
	// Output is the price of completion tokens.
	Output float64 `yaml:"output"`
	// CachedInput is the price of prompt tokens the provider served from its prompt cache.
	// Default: Input.
	CachedInput *float64 `yaml:"cached_input"`
}

// Model kinds.
const (
	KindChat      = "chat"
	KindEmbedding = "embedding"
)

// Model tiers.
const (
	TierBudget   = "budget"
	TierStandard = "standard"
	TierPremium  = "premium"
)

// Redis configures the shared Redis store.
type Redis struct {
	// URL is a redis:// URL. Empty means no Redis.
	URL string `yaml:"url"`
	// Timeout bounds each Redis call; a slower Redis is treated as down. Default 50ms.
	Timeout Duration `yaml:"timeout"`
}

// Duration is a time.Duration written in YAML as a Go duration string such as "1.5s".
type Duration struct{ time.Duration }

// UnmarshalYAML parses a duration string; a bare 0 is accepted as zero.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Value == "0" {
		d.Duration = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q (write it like \"1.5s\" or \"200ms\")",
			n.Line, n.Value)
	}
	if v < 0 {
		return fmt.Errorf("line %d: negative duration %q", n.Line, n.Value)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Secret holds a credential. It prints as "[redacted]" in logs and fmt output.
type Secret string

// String hides the value.
func (Secret) String() string { return "[redacted]" }

// Reveal returns the credential itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML, applies defaults and validates. Unknown fields are errors. Errors name
// the line and the field, for example "line 12: providers[0].base_url: required".
func Parse(b []byte) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, cleanYAMLError(err)
	}

	var c Config
	dec = yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, cleanYAMLError(err)
	}

	c.applyDefaults()
	v := &validator{lines: lineIndex(&root)}
	c.validate(v)
	if err := v.err(); err != nil {
		return nil, err
	}
	return &c, nil
}

// cleanYAMLError removes the library's "yaml: unmarshal errors:" prefix so that errors read
// "line 3: field foo not found in type config.Listener".
func cleanYAMLError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n")
	msg = strings.TrimPrefix(msg, "yaml: ")
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return errors.New(strings.Join(lines, "; "))
}

// ResolveSecrets reads each provider's API key from its environment variable. A named but
// unset variable is an error, so a missing key is found at start rather than as 401s.
func (c *Config) ResolveSecrets(getenv func(string) string) error {
	for i := range c.Providers {
		p := &c.Providers[i]
		if p.APIKeyEnv == "" {
			continue
		}
		k := getenv(p.APIKeyEnv)
		if k == "" {
			return fmt.Errorf("providers[%d] (%s): environment variable %s is not set",
				i, p.Name, p.APIKeyEnv)
		}
		p.APIKey = Secret(k)
	}
	return nil
}

// Model returns the model named name.
func (c *Config) Model(name string) (*Model, bool) {
	for i := range c.Models {
		if c.Models[i].Name == name {
			return &c.Models[i], true
		}
	}
	return nil, false
}

// Provider returns the provider named name.
func (c *Config) Provider(name string) (*Provider, bool) {
	for i := range c.Providers {
		if c.Providers[i].Name == name {
			return &c.Providers[i], true
		}
	}
	return nil, false
}

// ProvidersFor returns the providers that serve model, ordered by priority and then by their
// order in the file. The caller must not modify them.
func (c *Config) ProvidersFor(model string) []*Provider {
	var out []*Provider
	for i := range c.Providers {
		if c.Providers[i].Serves(model) {
			out = append(out, &c.Providers[i])
		}
	}
	slices.SortStableFunc(out, func(a, b *Provider) int { return cmp.Compare(a.Priority, b.Priority) })
	return out
}

// PrimaryProvidersFor returns the providers of model with the lowest priority value, in
// file order: they share the model's traffic, and the others stand behind them as
// fallbacks.
func (c *Config) PrimaryProvidersFor(model string) []*Provider {
	all := c.ProvidersFor(model)
	for i, p := range all {
		if p.Priority != all[0].Priority {
			return all[:i]
		}
	}
	return all
}

// Serves reports whether the provider serves model, and under which upstream name.
func (p *Provider) Serves(model string) bool {
	_, ok := p.ModelFor(model)
	return ok
}

// ModelFor returns the provider's entry for model.
func (p *Provider) ModelFor(model string) (ProviderModel, bool) {
	for _, m := range p.Models {
		if m.Name == model {
			return m, true
		}
	}
	return ProviderModel{}, false
}

// URL returns BaseURL parsed. It is valid after [Parse].
func (p *Provider) URL() *url.URL { return p.parsed }

// TLS reports whether the provider is reached over HTTPS.
func (p *Provider) TLS() bool { return p.parsed != nil && p.parsed.Scheme == "https" }

// PathPrefix is the base URL's path without a trailing slash, such as "/v1".
func (p *Provider) PathPrefix() string {
	if p.parsed == nil {
		return ""
	}
	return strings.TrimSuffix(p.parsed.Path, "/")
}

// Host is the host name of BaseURL, used as the upstream Host header and TLS server name.
func (p *Provider) Host() string {
	if p.parsed == nil {
		return ""
	}
	return p.parsed.Hostname()
}

// HostHeader is the Host header the provider expects: the base URL's host, with its port
// when the URL names one, as an HTTP client would send it.
func (p *Provider) HostHeader() string {
	if p.parsed == nil {
		return ""
	}
	return p.parsed.Host
}

// defaultEndpoint derives host:port from the base URL.
func (p *Provider) defaultEndpoint() string {
	port := p.parsed.Port()
	if port == "" {
		port = "80"
		if p.parsed.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(p.parsed.Hostname(), port)
}

// SplitHostPort splits an endpoint address into host and numeric port.
func SplitHostPort(addr string) (string, uint32, error) {
	h, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", ps, err)
	}
	return h, uint32(port), nil
}
