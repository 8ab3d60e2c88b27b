package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phochat/phogate/test/fakeprovider"
)

// balancingPollInterval is how often the balancing tests look at the metrics while they
// wait for weights to move.
const balancingPollInterval = 100 * time.Millisecond

// metricValue reads one sample from phogate's /metrics: the line of name whose labels
// contain every label in labels ("key=\"value\"").
func metricValue(t *testing.T, s *stack, name string, labels ...string) (float64, bool) {
	t.Helper()
	_, body := get(t, s.AdminURL+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(line, l)
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		return v, err == nil
	}
	return 0, false
}

// chatUntil sends chat requests until cond holds, and fails the test at the deadline.
// Failed requests are counted and returned.
func chatUntil(ctx context.Context, t *testing.T, s *stack, model string, cond func() bool) int {
	t.Helper()
	client := newClient(s)
	failed := 0
	tick := time.NewTicker(balancingPollInterval)
	defer tick.Stop()
	for !cond() {
		for range 5 {
			if _, err := client.Chat.Completions.New(ctx, chatParams(model, "Say hello")); err != nil {
				if ctx.Err() != nil {
					t.Fatalf("condition not reached before the deadline (last error %v)", err)
				}
				failed++
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached before the deadline")
		case <-tick.C:
		}
	}
	return failed
}

// One provider with two endpoints: when one becomes five times slower, new requests move
// to the other; when it recovers, its weight comes back.
func TestBalancingFollowsSlowEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	fakes := startFakes(t, "fast", "slow")
	quick := fakeprovider.Behavior{TTFT: 20 * time.Millisecond, TokensPerSecond: 1000}
	for _, f := range fakes.servers {
		f.SetBehavior(quick)
	}
	s := startStack(t, stackOptions{Config: fmt.Sprintf(`providers:
  - name: alpha
    base_url: http://%[1]s/v1
    endpoints: [%[1]s, %[2]s]
    models: [gpt-4o-mini]
models:
  - {name: gpt-4o-mini, tier: budget, price: {input: 0.15, output: 0.60}}
cache: {enabled: false}
balancing:
  enabled: true
  interval: 200ms
  half_life: 1s
`, fakes.addrs["fast"], fakes.addrs["slow"])})
	slowAddr := fakes.addrs["slow"]
	weight := func(addr string) float64 {
		v, _ := metricValue(t, s, "phogate_balancer_endpoint_weight",
			`cluster="provider_alpha"`, `endpoint="`+addr+`"`)
		return v
	}

	// Five times slower: five times the first-token delay, a fifth of the token rate.
	fakes.servers["slow"].SetBehavior(fakeprovider.Behavior{TTFT: 100 * time.Millisecond,
		TokensPerSecond: 200})
	if n := chatUntil(ctx, t, s, "gpt-4o-mini", func() bool { return weight(slowAddr) <= 100 }); n > 0 {
		t.Errorf("%d requests failed while the endpoint slowed down", n)
	}
	fast0, slow0 := fakes.servers["fast"].Calls(), fakes.servers["slow"].Calls()
	client := newClient(s)
	const n = 40
	for range n {
		if _, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o-mini", "Say hello")); err != nil {
			t.Fatalf("chat completion: %v", err)
		}
	}
	fast, slow := fakes.servers["fast"].Calls()-fast0, fakes.servers["slow"].Calls()-slow0
	if fast*100 < 80*(fast+slow) {
		t.Errorf("after the slowdown: fast endpoint served %d, slow %d; want at least 80%% fast",
			fast, slow)
	}
	if slow == 0 {
		t.Errorf("the slow endpoint got no request at all; want a trickle so recovery is seen")
	}

	// Recovery: the weight comes back to about half.
	fakes.servers["slow"].SetBehavior(quick)
	chatUntil(ctx, t, s, "gpt-4o-mini", func() bool { return weight(slowAddr) >= 350 })
	if v, ok := metricValue(t, s, "phogate_balancer_observation_to_push_seconds_count"); !ok || v == 0 {
		t.Errorf("observation_to_push_seconds_count = %v, %v; want pushes recorded", v, ok)
	}
}

// When the primary provider fails every request, the ext_proc server takes it out of use
// after balancing.failure_threshold failures and every later request succeeds through the
// fallback provider, which names the model differently.
func TestBalancingProviderFallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	fakes := startFakes(t, "alpha", "beta")
	s := startStack(t, stackOptions{
		Config: twoProviders(fakes) + `cache: {enabled: false}
balancing:
  enabled: true
  failure_threshold: 2
  probe_after: 10m
`,
		Env: []string{"E2E_ALPHA_KEY=sk-alpha", "E2E_BETA_KEY=sk-beta"},
	})
	client := newClient(s)
	if _, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o-mini", "Say hello")); err != nil {
		t.Fatalf("chat completion before the failure: %v", err)
	}

	fakes.servers["alpha"].SetBehavior(fakeprovider.Behavior{ErrorRate: 1})
	down := func() bool {
		v, ok := metricValue(t, s, "phogate_balancer_provider_up", `provider="alpha"`)
		return ok && v == 0
	}
	failed := chatUntil(ctx, t, s, "gpt-4o-mini", down)
	if failed > 2 {
		t.Errorf("%d requests failed before alpha was taken out of use, want at most 2", failed)
	}

	beta0 := fakes.servers["beta"].Calls()
	const n = 20
	for i := range n {
		got, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o-mini", "Say hello"))
		if err != nil {
			t.Fatalf("request %d after alpha failed: %v", i, err)
		}
		// beta names the model differently; the request body was rewritten for it.
		if got.Model != "gpt-4o-mini-2024-07-18" {
			t.Errorf("request %d answered by model %q, want beta's gpt-4o-mini-2024-07-18", i,
				got.Model)
		}
	}
	if got := fakes.servers["beta"].Calls() - beta0; got != n {
		t.Errorf("beta served %d of %d requests, want all", got, n)
	}
}
