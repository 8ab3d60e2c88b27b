package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

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

// When one provider of a model fails entirely, every request still succeeds: Envoy retries
// a failed attempt on the model cluster's next priority, the other provider, and the
// upstream filter makes that provider's rewrites (path, credential, model name) for the
// retry. First the provider answers every call with 500, then it stops accepting
// connections.
func TestBalancingProviderFallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	fakes := startFakes(t, "alpha", "beta")
	s := startStack(t, stackOptions{
		Config: twoProviders(fakes) + `cache: {enabled: false}
balancing:
  enabled: true
  failure_threshold: 2
`,
		Env: providerKeys,
	})
	client := newClient(s)
	if _, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o-mini", "Say hello")); err != nil {
		t.Fatalf("chat completion before the failure: %v", err)
	}

	// served sends n requests, every second one streamed, and checks that each succeeds
	// and was answered by beta under its own model name.
	served := func(phase string, n int) {
		t.Helper()
		beta0 := fakes.servers["beta"].Calls()
		for i := range n {
			var resp *http.Response
			model := ""
			if i%2 == 0 {
				got, err := client.Chat.Completions.New(ctx, chatParams("gpt-4o-mini", "Say hello"),
					option.WithResponseInto(&resp))
				if err != nil {
					t.Fatalf("%s: request %d: %v", phase, i, err)
				}
				model = got.Model
			} else {
				stream := client.Chat.Completions.NewStreaming(ctx, chatParams("gpt-4o-mini", "Say hello"),
					option.WithResponseInto(&resp))
				var acc openai.ChatCompletionAccumulator
				for stream.Next() {
					acc.AddChunk(stream.Current())
				}
				if err := stream.Err(); err != nil {
					t.Fatalf("%s: streamed request %d: %v", phase, i, err)
				}
				model = acc.Model
			}
			if model != "gpt-4o-mini-2024-07-18" || resp.Header.Get("x-phogate-provider") != "beta" {
				t.Errorf("%s: request %d answered by model %q, provider %q; want beta's "+
					"gpt-4o-mini-2024-07-18", phase, i, model, resp.Header.Get("x-phogate-provider"))
			}
		}
		if got := fakes.servers["beta"].Calls() - beta0; got != int64(n) {
			t.Errorf("%s: beta served %d of %d requests, want all", phase, got, n)
		}
	}

	fakes.servers["alpha"].SetBehavior(fakeprovider.Behavior{ErrorRate: 1})
	alpha0 := fakes.servers["alpha"].Calls()
	served("alpha answers 500", 20)
	if fakes.servers["alpha"].Calls() == alpha0 {
		t.Error("no request tried alpha first; the fallback was not exercised")
	}
	// The balancer publishes provider health once per interval.
	for {
		if v, ok := metricValue(t, s, "phogate_balancer_provider_up", `provider="alpha"`); ok && v == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("phogate_balancer_provider_up{alpha} never became 0")
		case <-time.After(balancingPollInterval):
		}
	}
	if v, ok := metricValue(t, s, "phogate_extproc_upstream_attempts_total",
		`code="500"`, `provider="alpha"`); !ok || v == 0 {
		t.Errorf("upstream_attempts_total{alpha,500} = %v, %v; want the failed attempts", v, ok)
	}

	fakes.runners["alpha"].Close()
	served("alpha refuses connections", 20)
}
