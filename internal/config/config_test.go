package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadExample(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "envoy", "phogate.yaml"))
	if err != nil {
		t.Fatalf("Load(example) = %v", err)
	}
	var got []string
	for _, p := range c.ProvidersFor("gpt-4o-mini") {
		got = append(got, p.Name)
	}
	if diff := cmp.Diff([]string{"fake-openai", "fake-azure"}, got); diff != "" {
		t.Errorf("ProvidersFor(gpt-4o-mini) (-want +got):\n%s", diff)
	}
	azure, _ := c.Provider("fake-azure")
	m, ok := azure.ModelFor("gpt-4o-mini")
	if !ok || m.Upstream() != "gpt-4o-mini-2024-07-18" {
		t.Errorf("fake-azure upstream name = %q, %v", m.Upstream(), ok)
	}
	if azure.PathPrefix() != "/openai/v1" || azure.Host() != "127.0.0.1" || azure.TLS() {
		t.Errorf("fake-azure URL parts = %q %q %v", azure.PathPrefix(), azure.Host(), azure.TLS())
	}
	mini, _ := c.Model("gpt-4o-mini")
	if *mini.Price.CachedInput != 0.075 || mini.Tier != TierBudget {
		t.Errorf("gpt-4o-mini = %+v", mini)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(`
providers:
  - name: openai
    base_url: https://api.openai.com/v1
    models: [m]
models:
  - name: m
`))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	p := c.Providers[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"listener.port", c.Listener.Port, DefaultListenerPort},
		{"listener.max_request_bytes", c.Listener.MaxRequestBytes, DefaultMaxRequestBytes},
		{"listener.retries", *c.Listener.Retries, DefaultRetries},
		{"ext_proc.failure_mode", c.ExtProc.FailureMode, "open"},
		{"ext_proc.message_timeout", c.ExtProc.MessageTimeout.Duration, time.Second},
		{"ext_proc.max_body_bytes", c.ExtProc.MaxBodyBytes, DefaultMaxRequestBytes},
		{"gateway.ext_proc_cluster_address", c.Gateway.ExtProcClusterAddress, "127.0.0.1:9002"},
		{"endpoint from https base_url", p.Endpoints[0], Endpoint{"api.openai.com:443", 1}},
		{"auth header", p.AuthHeader, "authorization"},
		{"model tier", c.Models[0].Tier, TierStandard},
		{"model kind", c.Models[0].Kind, KindChat},
		{"tls", p.TLS(), true},
	}
	for _, tt := range checks {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestParseErrorsNameLineAndField(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "unknown field",
			yaml: "listener:\n  prot: 80\n",
			want: []string{"line 2: field prot not found"},
		},
		{
			name: "bad duration",
			yaml: "ext_proc:\n  message_timeout: soon\n",
			want: []string{"line 2", `invalid duration "soon"`},
		},
		{
			name: "semantic errors all reported",
			yaml: `listener:
  port: 70000
ext_proc:
  failure_mode: maybe
providers:
  - name: a b
    base_url: ftp://x
    models: [ghost]
models:
  - name: real
    tier: cheap
`,
			want: []string{
				"line 2: listener.port: 70000 is not a TCP port",
				`line 4: ext_proc.failure_mode: "maybe" must be "open" or "closed"`,
				`line 6: providers[0].name: "a b" may hold only`,
				`line 7: providers[0].base_url: "ftp://x" must be an http:// or https:// URL`,
				`line 8: providers[0].models[0]: model "ghost" is not defined under models`,
				`line 11: models[0].tier: "cheap" must be budget, standard or premium`,
				`models: model "real" is served by no provider`,
			},
		},
		{
			name: "duplicate names",
			yaml: `providers:
  - {name: p, base_url: "http://h:1", models: [m]}
  - {name: p, base_url: "http://h:2", models: [m]}
models:
  - {name: m}
  - {name: m}
`,
			want: []string{
				`line 3: providers[1].name: provider "p" is defined twice`,
				`line 6: models[1].name: model "m" is defined twice`,
			},
		},
		{name: "empty", yaml: "", want: []string{"config is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse error = %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestResolveSecrets(t *testing.T) {
	c, err := Parse([]byte(`
providers:
  - {name: p, base_url: "https://h/v1", api_key_env: P_KEY, models: [m]}
models: [{name: m}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ResolveSecrets(func(string) string { return "" }); err == nil ||
		!strings.Contains(err.Error(), "P_KEY is not set") {
		t.Errorf("ResolveSecrets(unset) = %v, want an error naming P_KEY", err)
	}
	env := map[string]string{"P_KEY": "sk-secret"}
	if err := c.ResolveSecrets(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.Providers[0].APIKey.Reveal() != "sk-secret" {
		t.Errorf("APIKey not resolved")
	}
	if s := c.Providers[0].APIKey.String(); strings.Contains(s, "secret") {
		t.Errorf("Secret.String() = %q leaks the key", s)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Load(missing) = %v, want a not-exist error", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}
