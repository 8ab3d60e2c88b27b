package routing

import (
	"math"
	"sync"
	"time"
)

// Latency is a model's measured speed: exponentially weighted moving averages of the time to
// the first token and of the time per further output token.
type Latency struct {
	// TTFT is the average time to the first token.
	TTFT time.Duration
	// PerToken is the average time per output token after the first.
	PerToken time.Duration
	// Samples is the number of observations folded in.
	Samples int
	// Updated is when the last observation arrived, by the stats' clock.
	Updated time.Time
}

// Expected returns the expected time to produce an answer of outputTokens tokens.
func (l Latency) Expected(outputTokens int) time.Duration {
	return l.TTFT + time.Duration(outputTokens)*l.PerToken
}

// LatencyStats keeps per-model [Latency] averages, fed by whoever sees responses finish (the
// ext_proc server or the balancer) and read by the [Router]. It is safe for concurrent use.
//
// The averages are weighted by time, not by count: an observation replaces the fraction
// 1 − 2^(−Δt/halfLife) of the average, where Δt is the time since the model's previous
// observation, and never less than [MinObservationWeight]. After a quiet spell a new
// observation counts for most of the average, since the old ones are stale; during a burst
// each one still moves it.
type LatencyStats struct {
	halfLife time.Duration
	now      func() time.Time

	mu     sync.RWMutex
	models map[string]*Latency
}

// Latency statistics defaults and bounds.
const (
	// DefaultLatencyHalfLife is the half-life used when none is given.
	DefaultLatencyHalfLife = time.Minute
	// MinObservationWeight is the least weight of one observation in the average.
	MinObservationWeight = 0.1
	// maxLatencyModels bounds the number of model names tracked, so that a caller passing
	// unchecked names cannot grow the map without end.
	maxLatencyModels = 1024
)

// NewLatencyStats returns empty statistics whose averages have the given half-life
// ([DefaultLatencyHalfLife] when not positive), read from the clock now (time.Now when nil).
func NewLatencyStats(halfLife time.Duration, now func() time.Time) *LatencyStats {
	if halfLife <= 0 {
		halfLife = DefaultLatencyHalfLife
	}
	if now == nil {
		now = time.Now
	}
	return &LatencyStats{halfLife: halfLife, now: now, models: map[string]*Latency{}}
}

// Observe folds in one finished response of model: ttft is the time from sending the request
// to the first output token and total the time to the last, and outputTokens the number of
// tokens produced. For a response that was not streamed, pass ttft 0: the TTFT average is
// left alone and the whole time counts per token. Negative durations are ignored.
func (s *LatencyStats) Observe(model string, ttft, total time.Duration, outputTokens int) {
	if ttft < 0 || total < 0 {
		return
	}
	total = max(total, ttft)
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.models[model]
	if !ok {
		if len(s.models) >= maxLatencyModels {
			return
		}
		l = &Latency{TTFT: ttft}
		if outputTokens > 0 {
			l.PerToken = (total - ttft) / time.Duration(outputTokens)
		}
		l.Samples, l.Updated = 1, now
		s.models[model] = l
		return
	}

	w := s.weight(now.Sub(l.Updated))
	if ttft > 0 {
		l.TTFT = blend(l.TTFT, ttft, w)
	}
	if outputTokens > 0 {
		l.PerToken = blend(l.PerToken, (total-ttft)/time.Duration(outputTokens), w)
	}
	l.Samples++
	l.Updated = now
}

// weight is the share of the average that an observation dt after the previous one takes.
func (s *LatencyStats) weight(dt time.Duration) float64 {
	if dt <= 0 {
		return MinObservationWeight
	}
	w := 1 - math.Exp2(-float64(dt)/float64(s.halfLife))
	return max(w, MinObservationWeight)
}

func blend(avg, x time.Duration, w float64) time.Duration {
	return avg + time.Duration(w*float64(x-avg))
}

// Get returns the averages of model, and false when it has no observation yet.
func (s *LatencyStats) Get(model string) (Latency, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.models[model]
	if !ok {
		return Latency{}, false
	}
	return *l, true
}

// Snapshot returns the averages of every observed model. The map is the caller's.
func (s *LatencyStats) Snapshot() map[string]Latency {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]Latency, len(s.models))
	for name, l := range s.models {
		out[name] = *l
	}
	return out
}
