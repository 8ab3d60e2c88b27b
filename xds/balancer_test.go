package xds

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/routing"
)

// testClock is a clock the test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func testRule() rule {
	return newRule(config.Balancing{MinWeight: 0.05, MaxStep: 0.25, Hysteresis: 0.05,
		Sensitivity: 2, ReferenceTokens: 200, ErrorPenalty: 4, RateLimitPenalty: 2})
}

func TestRuleTarget(t *testing.T) {
	tests := []struct {
		name  string
		costs Shares
		want  Shares
	}{
		{"equal costs split evenly", Shares{"a": 1, "b": 1}, Shares{"a": 0.5, "b": 0.5}},
		// 5× slower at sensitivity 2 is 1/25 of the raw share; the floor lifts it to 0.05+.
		{"five times slower", Shares{"a": 1, "b": 5}, Shares{"a": 0.05 + 0.9*25.0/26, "b": 0.05 + 0.9/26}},
		{"never below the floor", Shares{"a": 1, "b": 1e6}, Shares{"a": 0.95, "b": 0.05}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := testRule().target(tt.costs)
			for k, w := range tt.want {
				if math.Abs(got[k]-w) > 1e-6 {
					t.Errorf("target(%v) = %v, want %v", tt.costs, got, tt.want)
				}
			}
		})
	}
}

func TestRuleMove(t *testing.T) {
	tests := []struct {
		name        string
		cur, target Shares
		want        Shares
	}{
		{"within hysteresis stays", Shares{"a": 0.5, "b": 0.5}, Shares{"a": 0.54, "b": 0.46},
			Shares{"a": 0.5, "b": 0.5}},
		{"bounded step", Shares{"a": 0.5, "b": 0.5}, Shares{"a": 0.95, "b": 0.05},
			Shares{"a": 0.75, "b": 0.25}},
		{"small change beyond hysteresis is taken whole", Shares{"a": 0.5, "b": 0.5},
			Shares{"a": 0.6, "b": 0.4}, Shares{"a": 0.6, "b": 0.4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := testRule().move(tt.cur, tt.target)
			for k, w := range tt.want {
				if math.Abs(got[k]-w) > 1e-9 {
					t.Errorf("move(%v, %v) = %v, want %v", tt.cur, tt.target, got, tt.want)
				}
			}
		})
	}
}

// twoProviderConfig has model m on providers a and b, and provider a on two endpoints.
func twoProviderConfig(t *testing.T, a1, a2, b string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(fmt.Appendf(nil, `
providers:
  - name: a
    base_url: http://%[1]s/v1
    endpoints: [%[1]s, %[2]s]
    models: [m]
  - name: b
    base_url: http://%[3]s/v1
    endpoints: [%[3]s]
    models: [m]
models:
  - name: m
balancing:
  enabled: true
  half_life: 2s
`, a1, a2, b))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// observeSpeed feeds n streamed answers of 100 tokens taking ttfb plus 100 × perToken.
func observeSpeed(s *routing.EndpointStats, provider, endpoint string, ttfb, perToken time.Duration,
	n int) {
	for range n {
		s.Observe(routing.Observation{Model: "m", Provider: provider, Endpoint: endpoint,
			Status: 200, Streamed: true, TTFB: ttfb, Total: ttfb + 100*perToken, OutputTokens: 100})
	}
}

func TestBalancerStepsTowardFastEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	cfg := twoProviderConfig(t, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	clock := &testClock{now: time.Unix(10_000, 0)}
	stats := routing.NewEndpointStats(routing.EndpointStatsOptions{HalfLife: 2 * time.Second,
		Now: clock.Now})
	srv := NewServer(ServerOptions{})
	reg := prometheus.NewRegistry()
	b, err := NewBalancer(BalancerOptions{Config: cfg, Server: srv, Stats: stats, Now: clock.Now,
		Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Step(ctx); err != nil {
		t.Fatalf("first Step() = %v", err)
	}
	edsBefore := srv.Version(resourcev3.EndpointType)

	var w map[string]map[string]uint32
	for i := range 4 {
		observeSpeed(stats, "a", "10.0.0.1:80", 100*time.Millisecond, 10*time.Millisecond, 5)
		observeSpeed(stats, "a", "10.0.0.2:80", 500*time.Millisecond, 50*time.Millisecond, 5)
		clock.Advance(time.Second)
		if _, err := b.Step(ctx); err != nil {
			t.Fatalf("Step() %d = %v", i, err)
		}
		w, _ = b.Weights()
	}
	if fast, slow := w["a"]["10.0.0.1:80"], w["a"]["10.0.0.2:80"]; fast < 900 || slow < 1 {
		t.Errorf("endpoint weights after four steps = %v, want the fast endpoint above 900 and "+
			"the slow one kept above 0", w["a"])
	}
	if srv.Version(resourcev3.EndpointType) == edsBefore {
		t.Error("EDS version did not move after the endpoint weights changed")
	}
	if got := testutil.ToFloat64(b.metrics.endpointWeight.WithLabelValues("provider_a",
		"10.0.0.1:80")); got < 900 {
		t.Errorf("phogate_balancer_endpoint_weight of the fast endpoint = %v, want above 900", got)
	}
	if n := testutil.CollectAndCount(b.metrics.toPush); n != 1 {
		t.Errorf("observation_to_push histogram has %d series, want 1", n)
	}
}

// A real gRPC xDS client follows weight changes that observations cause: the split of its
// calls between two providers of one model moves as their cluster weights move.
func TestBalancerGRPCClientFollowsObservations(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	a, b := startBackend(t), startBackend(t)
	cfg, err := config.Parse(fmt.Appendf(nil, `
providers:
  - {name: a, base_url: "http://%[1]s/v1", endpoints: ["%[1]s"], models: [m]}
  - {name: b, base_url: "http://%[2]s/v1", endpoints: ["%[2]s"], models: [m]}
models:
  - name: m
balancing: {enabled: true, half_life: 2s, max_step: 0.5}
`, a, b))
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{now: time.Unix(10_000, 0)}
	stats := routing.NewEndpointStats(routing.EndpointStatsOptions{HalfLife: 2 * time.Second,
		Now: clock.Now})
	s, _, addr := startServer(t)
	bal, err := NewBalancer(BalancerOptions{Config: cfg, Server: s, Stats: stats, Now: clock.Now,
		Build: BuildOptions{GRPCListenerName: "phogate-grpc"}})
	if err != nil {
		t.Fatal(err)
	}
	step := func() {
		t.Helper()
		clock.Advance(time.Second)
		if _, err := bal.Step(ctx); err != nil {
			t.Fatalf("Step() = %v", err)
		}
	}
	step()

	client := grpcXDSClient(t, addr, "grpc-balancer-test")

	// follow steps the balancer with fresh observations until the client sends most calls
	// to want; it waits for that event, bounded by the test's deadline.
	follow := func(fast, slow, want string) {
		t.Helper()
		for ctx.Err() == nil {
			observeSpeed(stats, fast, addrOf(fast, a, b), 50*time.Millisecond, 5*time.Millisecond, 3)
			observeSpeed(stats, slow, addrOf(slow, a, b), 250*time.Millisecond, 25*time.Millisecond, 3)
			step()
			if got := split(ctx, t, client, 200); got[addrOf(want, a, b)] >= 170 {
				return
			}
		}
		t.Fatalf("the gRPC client never sent most calls to %s", want)
	}
	follow("b", "a", "b")
	_, cw := bal.Weights()
	if cw["m"]["b"] <= cw["m"]["a"] {
		t.Errorf("cluster weights = %v, want b above a", cw["m"])
	}
	// The providers swap speeds; the split follows.
	follow("a", "b", "a")
}

func addrOf(provider, a, b string) string {
	if provider == "a" {
		return a
	}
	return b
}

// fakeStore is an in-memory [WeightStore].
type fakeStore struct {
	mu   sync.Mutex
	step WeightStep
}

func (f *fakeStore) Load(context.Context) (WeightStep, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.step, nil
}

func (f *fakeStore) Commit(_ context.Context, s WeightStep) (WeightStep, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.step.Epoch < s.Epoch {
		f.step = s
	}
	return f.step, nil
}

var _ WeightStore = (*fakeStore)(nil)

// Two control planes sharing a store publish the same weights even when their statistics
// differ: the first to compute a step wins it.
func TestBalancersShareSteps(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	cfg := twoProviderConfig(t, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	clock := &testClock{now: time.Unix(10_000, 0)}
	store := &fakeStore{}
	newBal := func() (*Balancer, *routing.EndpointStats) {
		stats := routing.NewEndpointStats(routing.EndpointStatsOptions{HalfLife: 2 * time.Second,
			Now: clock.Now})
		b, err := NewBalancer(BalancerOptions{Config: cfg, Server: NewServer(ServerOptions{}),
			Stats: stats, Store: store, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return b, stats
	}
	b1, s1 := newBal()
	b2, s2 := newBal()
	observeSpeed(s1, "a", "10.0.0.1:80", 100*time.Millisecond, 10*time.Millisecond, 5)
	observeSpeed(s1, "a", "10.0.0.2:80", 500*time.Millisecond, 50*time.Millisecond, 5)
	// The second control plane has seen the opposite.
	observeSpeed(s2, "a", "10.0.0.2:80", 100*time.Millisecond, 10*time.Millisecond, 5)
	observeSpeed(s2, "a", "10.0.0.1:80", 500*time.Millisecond, 50*time.Millisecond, 5)
	for range 3 {
		clock.Advance(time.Second)
		for _, b := range []*Balancer{b1, b2} {
			if _, err := b.Step(ctx); err != nil {
				t.Fatal(err)
			}
		}
		w1, c1 := b1.Weights()
		w2, c2 := b2.Weights()
		if fmt.Sprint(w1, c1) != fmt.Sprint(w2, c2) {
			t.Fatalf("control planes disagree: %v %v and %v %v", w1, c1, w2, c2)
		}
	}
}

// BenchmarkBuildPublishScale builds and publishes the resources of 500 providers with 10
// endpoints each, serving 250 models two providers apiece: 500 provider clusters and 500
// model clusters (each with both providers' 20 endpoints, one per priority), so 1,000
// clusters with 15,000 endpoints, 10,000 of them in model clusters. It changes one endpoint
// weight per iteration, as the balancer does every interval.
func BenchmarkBuildPublishScale(b *testing.B) {
	const providers, perProvider = 500, 10
	cfg := scaleConfig(b, providers, perProvider)
	ctx := b.Context()
	weights := map[string]map[string]uint32{}

	// The memory one published resource set holds: heap after publishing it once, less
	// heap before, with the server kept alive.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	srv := NewServer(ServerOptions{})
	r, err := Build(cfg, BuildOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Publish(ctx, r); err != nil {
		b.Fatal(err)
	}
	r = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	published := float64(after.HeapAlloc) - float64(before.HeapAlloc)

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		weights["p0"] = map[string]uint32{"10.0.0.1:1": uint32(i%100 + 2)}
		r, err := Build(cfg, BuildOptions{EndpointWeights: weights})
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.Publish(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// ResetTimer drops reported metrics, so this one is reported last.
	b.ReportMetric(published, "published-heap-bytes")
	runtime.KeepAlive(srv)
}

// scaleConfig has the given number of providers (an even number) with perProvider
// endpoints each; providers 2k and 2k+1 serve model mk.
func scaleConfig(tb testing.TB, providers, perProvider int) *config.Config {
	tb.Helper()
	var y []byte
	y = append(y, "providers:\n"...)
	for c := range providers {
		y = fmt.Appendf(y, "  - name: p%d\n    base_url: http://10.%d.%d.1:1/v1\n    models: [m%d]\n"+
			"    endpoints:\n", c, c/250, c%250, c/2)
		for e := range perProvider {
			y = fmt.Appendf(y, "      - 10.%d.%d.%d:1\n", c/250, c%250, e+1)
		}
	}
	y = append(y, "models:\n"...)
	for m := range providers / 2 {
		y = fmt.Appendf(y, "  - name: m%d\n", m)
	}
	cfg, err := config.Parse(y)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}
