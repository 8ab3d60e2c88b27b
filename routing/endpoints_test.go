package routing

import (
	"math"
	"testing"
	"time"
)

func newTestEndpointStats(clock *fakeClock) *EndpointStats {
	return NewEndpointStats(EndpointStatsOptions{
		HalfLife: 10 * time.Second, Now: clock.Now, FailureThreshold: 2,
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

func TestEndpointStatsProviderDown(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	s := newTestEndpointStats(clock)
	fail := Observation{Provider: "p", Endpoint: "e", Status: 503}

	s.Observe(fail)
	if s.ProviderDown("p") {
		t.Fatal("ProviderDown after one failure = true, want false (threshold 2)")
	}
	// A 429 neither breaks nor ends a run of failures.
	s.Observe(Observation{Provider: "p", Status: 429})
	s.Observe(fail)
	if !s.ProviderDown("p") {
		t.Fatal("after two failures in a row ProviderDown = false, want true")
	}
	if s.ProviderDown("q") {
		t.Error("a provider without observations is down")
	}
	s.Observe(Observation{Provider: "p", Endpoint: "e", Status: 200})
	if s.ProviderDown("p") {
		t.Error("a successful answer did not bring the provider back")
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
