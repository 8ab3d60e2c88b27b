package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// validator collects every problem in a file, so an operator fixes them in one pass.
type validator struct {
	lines map[string]int // field path → line in the file
	errs  []string
}

// errorf records a problem at path. The message names the line when path appears in the
// file, or the nearest enclosing field that does.
func (v *validator) errorf(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if line := v.line(path); line > 0 {
		v.errs = append(v.errs, fmt.Sprintf("line %d: %s: %s", line, path, msg))
		return
	}
	v.errs = append(v.errs, fmt.Sprintf("%s: %s", path, msg))
}

func (v *validator) line(path string) int {
	for p := path; p != ""; {
		if l, ok := v.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// checkName checks the name of a kind of item at path: present, made of name characters
// and not in seen, to which it is then added.
func (v *validator) checkName(path, kind, name string, seen map[string]bool) {
	switch {
	case name == "":
		v.errorf(path, "required")
	case !namePattern.MatchString(name):
		v.errorf(path, "%q may hold only letters, digits, '.', '-' and '_'", name)
	case seen[name]:
		v.errorf(path, "%s %q is defined twice", kind, name)
	}
	seen[name] = true
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(v.errs, "\n"))
}

// lineIndex maps every field path in the document ("providers[0].base_url") to its line.
func lineIndex(root *yaml.Node) map[string]int {
	idx := map[string]int{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				idx[p] = k.Line
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				idx[p] = c.Line
				walk(c, p)
			}
		}
	}
	walk(root, "")
	return idx
}

// Defaults for fields left empty.
const (
	DefaultListenerPort    = 8080
	DefaultMaxRequestBytes = 1 << 20
	DefaultRetries         = 2
	DefaultExtProcAddress  = "127.0.0.1:9002"
	DefaultXDSAddress      = "127.0.0.1:18000"
	DefaultAdminAddress    = "127.0.0.1:9090"
	DefaultMessageTimeout  = time.Second
	DefaultRedisTimeout    = 50 * time.Millisecond
)

func (c *Config) applyDefaults() {
	l := &c.Listener
	setDefault(&l.Address, "0.0.0.0")
	setDefault(&l.Port, DefaultListenerPort)
	setDefault(&l.MaxRequestBytes, DefaultMaxRequestBytes)
	setDefault(&l.StreamIdleTimeout.Duration, 5*time.Minute)
	if l.Retries == nil {
		r := DefaultRetries
		l.Retries = &r
	}

	g := &c.Gateway
	setDefault(&g.ExtProcAddress, DefaultExtProcAddress)
	setDefault(&g.XDSAddress, DefaultXDSAddress)
	setDefault(&g.AdminAddress, DefaultAdminAddress)
	setDefault(&g.ShutdownTimeout.Duration, 10*time.Second)
	if g.ExtProcClusterAddress == "" {
		g.ExtProcClusterAddress = reachable(g.ExtProcAddress)
	}

	e := &c.ExtProc
	setDefault(&e.FailureMode, "open")
	setDefault(&e.MessageTimeout.Duration, DefaultMessageTimeout)
	setDefault(&e.MaxBodyBytes, l.MaxRequestBytes)

	for i := range c.Providers {
		p := &c.Providers[i]
		setDefault(&p.AuthHeader, "authorization")
		p.AuthHeader = strings.ToLower(p.AuthHeader)
		if u, err := url.Parse(p.BaseURL); err == nil && u.Host != "" {
			p.parsed = u
			if len(p.Endpoints) == 0 {
				p.Endpoints = []Endpoint{{Address: p.defaultEndpoint()}}
			}
		}
		for j := range p.Endpoints {
			setDefault(&p.Endpoints[j].Weight, 1)
		}
	}
	for i := range c.Models {
		m := &c.Models[i]
		setDefault(&m.Kind, KindChat)
		setDefault(&m.Tier, TierStandard)
		if m.Price.CachedInput == nil {
			in := m.Price.Input
			m.Price.CachedInput = &in
		}
		if m.Quality == 0 {
			m.Quality = defaultQuality[m.Tier]
		}
	}

	setDefault(&c.Redis.Timeout.Duration, DefaultRedisTimeout)
	c.Cache.applyDefaults(c)
	c.Ledger.applyDefaults(c)
	c.Routing.applyDefaults(c)
	c.Balancing.applyDefaults(c)
}

var defaultQuality = map[string]float64{TierBudget: 0.6, TierStandard: 0.75, TierPremium: 0.9}

// reachable turns a listen address into one a client can dial: an unspecified host becomes
// 127.0.0.1.
func reachable(addr string) string {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if h == "" || h == "0.0.0.0" || h == "::" {
		h = "127.0.0.1"
	}
	return net.JoinHostPort(h, p)
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func (c *Config) validate(v *validator) {
	c.validateNetwork(v)
	models := c.validateModels(v)
	c.validateProviders(v, models)
	c.Cache.validate(v, c)
	c.Ledger.validate(v, c)
	c.Routing.validate(v, c)
	c.Balancing.validate(v, c)
	if c.Redis.URL != "" {
		if _, err := url.Parse(c.Redis.URL); err != nil || !strings.HasPrefix(c.Redis.URL, "redis") {
			v.errorf("redis.url", "must be a redis:// or rediss:// URL")
		}
	}
}

func (c *Config) validateNetwork(v *validator) {
	if net.ParseIP(c.Listener.Address) == nil {
		v.errorf("listener.address", "%q is not an IP address", c.Listener.Address)
	}
	if c.Listener.Port < 0 || c.Listener.Port > 65535 {
		v.errorf("listener.port", "%d is not a TCP port", c.Listener.Port)
	}
	if c.Listener.MaxRequestBytes < 1024 {
		v.errorf("listener.max_request_bytes", "must be at least 1024")
	}
	if *c.Listener.Retries < 0 || *c.Listener.Retries > 10 {
		v.errorf("listener.retries", "must be between 0 and 10")
	}
	addrs := map[string]string{
		"gateway.ext_proc_address":         c.Gateway.ExtProcAddress,
		"gateway.ext_proc_cluster_address": c.Gateway.ExtProcClusterAddress,
		"gateway.xds_address":              c.Gateway.XDSAddress,
		"gateway.admin_address":            c.Gateway.AdminAddress,
	}
	for _, path := range sortedKeys(addrs) {
		if _, _, err := net.SplitHostPort(addrs[path]); err != nil {
			v.errorf(path, "%q is not host:port", addrs[path])
		}
	}
	switch c.ExtProc.FailureMode {
	case "open", "closed":
	default:
		v.errorf("ext_proc.failure_mode", "%q must be \"open\" or \"closed\"", c.ExtProc.FailureMode)
	}
	if mt := c.ExtProc.MessageTimeout.Duration; mt > time.Hour {
		v.errorf("ext_proc.message_timeout", "must be at most 1h (Envoy's limit)")
	}
	if c.ExtProc.MaxBodyBytes > c.Listener.MaxRequestBytes {
		v.errorf("ext_proc.max_body_bytes", "must not exceed listener.max_request_bytes (%d)",
			c.Listener.MaxRequestBytes)
	}
}

// validateModels checks the models and returns them by name.
func (c *Config) validateModels(v *validator) map[string]*Model {
	byName := map[string]*Model{}
	if len(c.Models) == 0 {
		v.errorf("models", "at least one model is required")
	}
	for i := range c.Models {
		m := &c.Models[i]
		path := fmt.Sprintf("models[%d]", i)
		switch {
		case m.Name == "":
			v.errorf(path+".name", "required")
		case byName[m.Name] != nil:
			v.errorf(path+".name", "model %q is defined twice", m.Name)
		default:
			byName[m.Name] = m
		}
		if m.Kind != KindChat && m.Kind != KindEmbedding {
			v.errorf(path+".kind", "%q must be %q or %q", m.Kind, KindChat, KindEmbedding)
		}
		if _, ok := defaultQuality[m.Tier]; !ok {
			v.errorf(path+".tier", "%q must be budget, standard or premium", m.Tier)
		}
		if m.Price.Input < 0 || m.Price.Output < 0 || *m.Price.CachedInput < 0 {
			v.errorf(path+".price", "prices must not be negative")
		}
		if m.Quality < 0 || m.Quality > 1 {
			v.errorf(path+".quality", "must be between 0 and 1")
		}
	}
	return byName
}

func (c *Config) validateProviders(v *validator, models map[string]*Model) {
	if len(c.Providers) == 0 {
		v.errorf("providers", "at least one provider is required")
	}
	seen := map[string]bool{}
	served := map[string]bool{}
	for i := range c.Providers {
		p := &c.Providers[i]
		path := fmt.Sprintf("providers[%d]", i)
		v.checkName(path+".name", "provider", p.Name, seen)
		p.validateURL(v, path)
		for j, e := range p.Endpoints {
			ep := fmt.Sprintf("%s.endpoints[%d]", path, j)
			if _, _, err := SplitHostPort(e.Address); err != nil {
				v.errorf(ep, "%q is not host:port", e.Address)
			}
			if e.Weight < 1 {
				v.errorf(ep+".weight", "must be at least 1")
			}
		}
		if len(p.Models) == 0 {
			v.errorf(path+".models", "a provider must serve at least one model")
		}
		for j, m := range p.Models {
			if models[m.Name] == nil {
				v.errorf(fmt.Sprintf("%s.models[%d]", path, j),
					"model %q is not defined under models", m.Name)
			}
			served[m.Name] = true
		}
		if p.Priority < 0 {
			v.errorf(path+".priority", "must not be negative")
		}
	}
	for _, m := range c.Models {
		if m.Name != "" && !served[m.Name] {
			v.errorf("models", "model %q is served by no provider", m.Name)
		}
	}
}

func (p *Provider) validateURL(v *validator, path string) {
	if p.BaseURL == "" {
		v.errorf(path+".base_url", "required")
		return
	}
	if p.parsed == nil || (p.parsed.Scheme != "http" && p.parsed.Scheme != "https") {
		v.errorf(path+".base_url", "%q must be an http:// or https:// URL", p.BaseURL)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
