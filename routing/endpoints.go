package routing

import (
	"math"
	"sync"
	"time"
)

// Observation is one answered request as the gateway saw it: where it went, how it ended
// and how long it took. The ext_proc server produces one per answered request; the balancer
// folds them into [EndpointStats].
type Observation struct {
	// Model is the configured model the request was for.
	Model string `json:"model"`
	// Provider is the provider the request was routed to.
	Provider string `json:"provider"`
	// Cluster is the Envoy cluster that served it, when known.
	Cluster string `json:"cluster,omitempty"`
	// Endpoint is the host:port that served the last attempt (Envoy's upstream.address);
	// empty when no connection was made.
	Endpoint string `json:"endpoint,omitempty"`
	// Status is the HTTP status of the answer.
	Status int `json:"status"`
	// TTFB is the time from routing the request to the first byte of the answer: the first
	// body chunk of a stream, the response headers otherwise.
	TTFB time.Duration `json:"ttfb"`
	// Total is the time from routing the request to the end of the answer.
	Total time.Duration `json:"total"`
	// OutputTokens is the number of tokens generated, 0 when unknown.
	OutputTokens int `json:"output_tokens"`
	// Streamed reports an SSE answer, whose TTFB is the time to the first token.
	Streamed bool `json:"streamed"`
	// At is when the answer ended; the zero time means "now" by the receiver's clock.
	At time.Time `json:"at"`
}

// Failed reports an answer that counts against the endpoint: a 5xx, or no answer at all
// from the upstream (Envoy's local 503 after a reset or connect failure).
func (o Observation) Failed() bool { return o.Status >= 500 || o.Status == 0 }

// RateLimited reports a 429 answer.
func (o Observation) RateLimited() bool { return o.Status == 429 }

// EndpointStat is one endpoint's moving averages. Shares are from 0 to 1.
type EndpointStat struct {
	// TTFB is the average time to the first byte of a successful streamed answer.
	TTFB time.Duration
	// PerToken is the average time per output token of a successful answer; for a
	// non-streamed answer the whole time counts per token.
	PerToken time.Duration
	// ErrorShare is the moving share of failed answers ([Observation.Failed]).
	ErrorShare float64
	// RateLimitShare is the moving share of 429 answers.
	RateLimitShare float64
	// Latencies is the number of successful answers folded into TTFB and PerToken.
	Latencies int
	// Samples is the number of observations folded in.
	Samples int
	// Updated is when the last observation arrived.
	Updated time.Time
	// Confidence is how fresh the averages are when read with [EndpointStats.Snapshot]:
	// 2^(−age/(AgeOutHalfLives·half-life)), 1 for a brand-new observation, toward 0 as they
	// age out.
	Confidence float64
}

// EndpointKey names an endpoint of a provider.
type EndpointKey struct {
	// Provider is the provider's name.
	Provider string
	// Endpoint is the endpoint's host:port.
	Endpoint string
}

// EndpointStatsOptions configure [NewEndpointStats]. The zero value is usable.
type EndpointStatsOptions struct {
	// HalfLife is the averages' half-life; [DefaultLatencyHalfLife] when not positive.
	HalfLife time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// FailureThreshold is the number of consecutive failed answers after which a provider
	// is down (see [EndpointStats.ProviderDown]); 3 when not positive.
	FailureThreshold int
	// Latency, when set, also receives every successful answer per model.
	Latency *LatencyStats
}

// AgeOutHalfLives is how many half-lives of the averages make one half-life of an
// endpoint's [EndpointStat.Confidence]. Ageing slower than the averages themselves keeps an
// endpoint that gets only a trickle of traffic from looking neutral between its answers.
const AgeOutHalfLives = 4

// maxEndpoints bounds the endpoints tracked, so that observations naming unchecked
// addresses cannot grow the map without end.
const maxEndpoints = 100_000

// EndpointStats keeps per-endpoint latency and failure averages and per-provider health,
// fed with [Observation]s. It is safe for concurrent use.
//
// Averages are weighted by time as in [LatencyStats]. Failures count in two ways: as a
// moving share that raises the endpoint's cost for the balancer, and as a run of
// consecutive failures per provider that marks the provider down
// ([EndpointStats.ProviderDown]) until an answer succeeds.
type EndpointStats struct {
	opts EndpointStatsOptions

	mu        sync.Mutex
	endpoints map[EndpointKey]*EndpointStat
	providers map[string]*providerHealth
	seq       uint64    // observations folded so far
	pending   time.Time // arrival of the oldest observation not yet taken by TakePending
}

// providerHealth is one provider's run of failures.
type providerHealth struct {
	consecutive int
	down        bool
}

// NewEndpointStats returns empty statistics.
func NewEndpointStats(opts EndpointStatsOptions) *EndpointStats {
	if opts.HalfLife <= 0 {
		opts.HalfLife = DefaultLatencyHalfLife
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FailureThreshold <= 0 {
		opts.FailureThreshold = 3
	}
	return &EndpointStats{
		opts:      opts,
		endpoints: map[EndpointKey]*EndpointStat{},
		providers: map[string]*providerHealth{},
	}
}

// Observe folds in one answer. Observations without a provider are ignored; those without
// an endpoint count only toward the provider's health.
func (s *EndpointStats) Observe(o Observation) {
	if o.Provider == "" || o.TTFB < 0 || o.Total < 0 {
		return
	}
	now := s.opts.Now()
	at := o.At
	if at.IsZero() {
		at = now
	}
	ok := !o.Failed() && !o.RateLimited() && o.Status < 400
	if ok && s.opts.Latency != nil && o.OutputTokens > 0 {
		ttft := time.Duration(0)
		if o.Streamed {
			ttft = o.TTFB
		}
		s.opts.Latency.Observe(o.Model, ttft, o.Total, o.OutputTokens)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	first := at
	if now.Before(first) {
		first = now
	}
	if s.pending.IsZero() || first.Before(s.pending) {
		s.pending = first
	}
	s.foldHealth(o)
	if o.Endpoint == "" {
		return
	}
	k := EndpointKey{o.Provider, o.Endpoint}
	e := s.endpoints[k]
	if e == nil {
		if len(s.endpoints) >= maxEndpoints {
			return
		}
		e = &EndpointStat{}
		s.endpoints[k] = e
	}
	s.fold(e, o, at, ok)
}

// fold updates one endpoint's averages with o.
func (s *EndpointStats) fold(e *EndpointStat, o Observation, at time.Time, ok bool) {
	w := 1.0
	if e.Samples > 0 {
		w = timeWeight(at.Sub(e.Updated), s.opts.HalfLife)
	}
	e.ErrorShare += w * (b2f(o.Failed()) - e.ErrorShare)
	e.RateLimitShare += w * (b2f(o.RateLimited()) - e.RateLimitShare)
	e.Samples++
	if at.After(e.Updated) {
		e.Updated = at
	}
	if !ok {
		return
	}
	ttfb, perToken, hasTTFB, hasPerToken := latencyParts(o)
	lw := w
	if e.Latencies == 0 {
		lw = 1
	}
	if hasTTFB {
		e.TTFB = blend(e.TTFB, ttfb, lw)
	}
	if hasPerToken {
		e.PerToken = blend(e.PerToken, perToken, lw)
	}
	e.Latencies++
}

// latencyParts splits a successful answer into time to first byte and time per token. A
// non-streamed answer has no separate first token: its whole time counts per token, so a
// long answer does not look like a slow endpoint. Without a token count only the time to
// the first byte (for a non-streamed answer, the whole time) is known.
func latencyParts(o Observation) (ttfb, perToken time.Duration, hasTTFB, hasPerToken bool) {
	total := max(o.Total, o.TTFB)
	n := time.Duration(o.OutputTokens)
	switch {
	case o.Streamed && n > 0:
		return o.TTFB, (total - o.TTFB) / n, true, true
	case o.Streamed:
		return o.TTFB, 0, true, false
	case n > 0:
		return 0, total / n, false, true
	}
	return total, 0, true, false
}

// foldHealth counts o toward its provider's run of failures.
func (s *EndpointStats) foldHealth(o Observation) {
	h := s.providers[o.Provider]
	if h == nil {
		if len(s.providers) >= maxLatencyModels {
			return
		}
		h = &providerHealth{}
		s.providers[o.Provider] = h
	}
	switch {
	case o.Failed():
		h.consecutive++
		if h.consecutive >= s.opts.FailureThreshold {
			h.down = true
		}
	case o.RateLimited():
		// A 429 says the provider is busy, not broken; Envoy's retry back-off and the
		// balancer's penalty deal with it.
	default:
		h.consecutive, h.down = 0, false
	}
}

// ProviderDown reports whether the provider's last FailureThreshold answers all failed.
func (s *EndpointStats) ProviderDown(provider string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.providers[provider]
	return h != nil && h.down
}

// Snapshot returns every endpoint's averages aged to time at: failure shares decay by the
// Confidence factor, and Confidence says how much the latencies still count. The map is the
// caller's.
func (s *EndpointStats) Snapshot(at time.Time) map[EndpointKey]EndpointStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[EndpointKey]EndpointStat, len(s.endpoints))
	for k, e := range s.endpoints {
		c := *e
		age := max(at.Sub(e.Updated), 0)
		c.Confidence = math.Exp2(-float64(age) / float64(AgeOutHalfLives*s.opts.HalfLife))
		c.ErrorShare *= c.Confidence
		c.RateLimitShare *= c.Confidence
		out[k] = c
	}
	return out
}

// TakePending returns the time of the oldest observation that no earlier call returned,
// and the zero time when none arrived since. The balancer uses it to measure the time from
// an observation to the push that reflects it.
func (s *EndpointStats) TakePending() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.pending
	s.pending = time.Time{}
	return t
}

// Observations returns the number of observations folded in so far.
func (s *EndpointStats) Observations() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// timeWeight is the share of an average that an observation dt after the previous one
// takes: 1 − 2^(−dt/halfLife), at least [MinObservationWeight].
func timeWeight(dt, halfLife time.Duration) float64 {
	if dt <= 0 {
		return MinObservationWeight
	}
	return max(1-math.Exp2(-float64(dt)/float64(halfLife)), MinObservationWeight)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
