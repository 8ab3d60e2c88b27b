package routing

import (
	"math"
	"testing"
	"time"

	"github.com/phochat/phogate/internal/config"
)

func newTestEndpointStats(clock *fakeClock) *EndpointStats {
	return NewEndpointStats(EndpointStatsOptions{
		HalfLife: 10 * time.Second, Now: clock.Now, FailureThreshold: 2,
		ProbeAfter: 5 * time.Second,
	})
}

func TestEndpointStatsLatencyParts(t *testing.T) {
	tests := []struct {
		name         string
		obs          Observation
		wantTTFB     time.Duration
		wantPerToken time.Duration
	}{
		{
			name: "streamed answer splits first byte and tokens",
			obs: Observation{Status: 200, Streamed: true, TTFB: 200 * time.Millisecond,
				Total: 1200 * time.Millisecond, OutputTokens: 100},
			wantTTFB: 200 * time.Millisecond, wantPerToken: 10 * time.Millisecond,
		},
		{
			name:         "non-streamed answer counts its whole time per token",
			obs:          Observation{Status: 200, TTFB: time.Second, Total: time.Second, OutputTokens: 50},
			wantPerToken: 20 * time.Millisecond,
		},
		{
			name:     "non-streamed answer without usage is judged per request",
			obs:      Observation{Status: 200, TTFB: time.Second, Total: time.Second},
			wantTTFB: time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Unix(1000, 0)}
			s := newTestEndpointStats(clock)
			tt.obs.Provider, tt.obs.Endpoint = "p", "10.0.0.1:80"
			s.Observe(tt.obs)
			got := s.Snapshot(clock.Now())[EndpointKey{"p", "10.0.0.1:80"}]
			if got.TTFB != tt.wantTTFB || got.PerToken != tt.wantPerToken {
				t.Errorf("Observe(%+v) gives TTFB %v, per token %v; want %v, %v", tt.obs, got.TTFB,
					got.PerToken, tt.wantTTFB, tt.wantPerToken)
			}
		})
	}
}

// A long answer at the same speed must not look slower than a short one.
func TestEndpointStatsLongAnswerIsNotSlow(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	s := newTestEndpointStats(clock)
	for range 5 {
		clock.Advance(time.Second)
		s.Observe(Observation{Provider: "p", Endpoint: "short", Status: 200, Streamed: true,
			TTFB: 100 * time.Millisecond, Total: 200 * time.Millisecond, OutputTokens: 10})
		s.Observe(Observation{Provider: "p", Endpoint: "long", Status: 200, Streamed: true,
			TTFB: 100 * time.Millisecond, Total: 10100 * time.Millisecond, OutputTokens: 1000})
	}
	snap := s.Snapshot(clock.Now())
	short, long := snap[EndpointKey{"p", "short"}], snap[EndpointKey{"p", "long"}]
	if short.PerToken != long.PerToken || short.TTFB != long.TTFB {
		t.Errorf("short answers %+v, long answers %+v; want equal averages", short, long)
	}
}

func TestEndpointStatsFailuresAgeOut(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	s := newTestEndpointStats(clock)
	s.Observe(Observation{Provider: "p", Endpoint: "e", Status: 500})
	s.Observe(Observation{Provider: "p", Endpoint: "e", Status: 429})
	k := EndpointKey{"p", "e"}
	got := s.Snapshot(clock.Now())[k]
	if got.ErrorShare <= 0.5 || got.RateLimitShare <= 0 || got.Confidence != 1 {
		t.Fatalf("after a 500 and a 429: %+v, want error share above 0.5, some 429 share", got)
	}
	// Two confidence half-lives later both shares and the confidence are a quarter.
	later := s.Snapshot(clock.Now().Add(2 * AgeOutHalfLives * 10 * time.Second))[k]
	if math.Abs(later.Confidence-0.25) > 1e-9 || math.Abs(later.ErrorShare-got.ErrorShare/4) > 1e-9 {
		t.Errorf("two half-lives later: %+v, want confidence 0.25 and error share %v", later,
			got.ErrorShare/4)
	}
}

func TestEndpointStatsProviderDownAndProbe(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	s := newTestEndpointStats(clock)
	fail := Observation{Provider: "p", Endpoint: "e", Status: 503}

	s.Observe(fail)
	if !s.ProviderUsable("p") {
		t.Fatal("ProviderUsable after one failure = false, want true (threshold 2)")
	}
	s.Observe(Observation{Provider: "p", Status: 429})
	s.Observe(fail)
	if s.ProviderUsable("p") || !s.ProviderDown("p") {
		t.Fatal("after two failures in a row the provider is usable, want down")
	}
	clock.Advance(5 * time.Second)
	if !s.ProviderUsable("p") {
		t.Fatal("ProviderUsable after probe_after = false, want one probe")
	}
	if s.ProviderUsable("p") {
		t.Fatal("a second request right after the probe was let through")
	}
	s.Observe(Observation{Provider: "p", Endpoint: "e", Status: 200})
	if !s.ProviderUsable("p") || s.ProviderDown("p") {
		t.Error("a successful probe did not bring the provider back")
	}
}

func TestEndpointStatsFeedsLatencyStats(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	lat := NewLatencyStats(10*time.Second, clock.Now)
	s := NewEndpointStats(EndpointStatsOptions{Now: clock.Now, Latency: lat})
	s.Observe(Observation{Model: "m", Provider: "p", Endpoint: "e", Status: 200, Streamed: true,
		TTFB: 100 * time.Millisecond, Total: 1100 * time.Millisecond, OutputTokens: 100})
	s.Observe(Observation{Model: "m", Provider: "p", Endpoint: "e", Status: 500,
		Total: time.Millisecond, OutputTokens: 1})
	got, ok := lat.Get("m")
	if !ok || got.TTFT != 100*time.Millisecond || got.PerToken != 10*time.Millisecond ||
		got.Samples != 1 {
		t.Errorf("LatencyStats.Get(m) = %+v, %v; want one sample of 100ms and 10ms/token", got, ok)
	}
}

func TestFallbackPicker(t *testing.T) {
	cfg, err := config.Parse([]byte(`
providers:
  - {name: a, base_url: "http://10.0.0.1/v1", models: [m]}
  - {name: b, base_url: "http://10.0.0.2/v1", priority: 1, models: [{name: m, upstream_name: m2}]}
models:
  - name: m
`))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := cfg.Model("m")
	clock := &fakeClock{now: time.Unix(1000, 0)}
	s := newTestEndpointStats(clock)
	f := NewFallbackPicker(cfg, s)

	pick := func() string {
		t.Helper()
		p, pm, err := f.Pick(m)
		if err != nil {
			t.Fatalf("Pick(m) = %v", err)
		}
		return p.Name + "/" + pm.Upstream()
	}
	if got := pick(); got != "a/m" {
		t.Errorf("healthy: Pick(m) = %s, want a/m", got)
	}
	for range 2 {
		s.Observe(Observation{Provider: "a", Status: 503})
	}
	if got := pick(); got != "b/m2" {
		t.Errorf("a down: Pick(m) = %s, want b/m2", got)
	}
	for range 2 {
		s.Observe(Observation{Provider: "b", Status: 503})
	}
	if got := pick(); got != "a/m" {
		t.Errorf("both down: Pick(m) = %s, want the first, a/m", got)
	}
}
