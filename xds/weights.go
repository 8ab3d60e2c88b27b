package xds

import (
	"math"
	"slices"
	"time"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/routing"
)

// weightScale is the total of the integer weights of one cluster or one model's split;
// a share of 0.05 is weight 50.
const weightScale = 1000

// Shares are the traffic shares of the members of one group (endpoints of a provider, or
// providers of a model), member → share, summing to 1.
type Shares map[string]float64

// WeightStep is the balancer's state after one step: the shares of every endpoint by
// provider and of every provider by model. It is what control planes share through a
// [WeightStore].
type WeightStep struct {
	// Epoch numbers the step: the step's time divided by the interval.
	Epoch int64 `json:"epoch"`
	// Endpoints holds provider name → endpoint address → share.
	Endpoints map[string]Shares `json:"endpoints"`
	// Clusters holds model name → provider name → share.
	Clusters map[string]Shares `json:"clusters"`
}

// rule is the weight rule's parameters; see [config.Balancing].
type rule struct {
	minShare, maxStep, hysteresis, sensitivity float64
	refTokens                                  float64
	errPenalty, limitPenalty                   float64
}

func newRule(b config.Balancing) rule {
	return rule{
		minShare: b.MinWeight, maxStep: b.MaxStep, hysteresis: b.Hysteresis,
		sensitivity: b.Sensitivity, refTokens: float64(b.ReferenceTokens),
		errPenalty: b.ErrorPenalty, limitPenalty: b.RateLimitPenalty,
	}
}

// nextStep computes the shares after prev from the statistics, for every provider with
// more than one endpoint and every chat model with more than one provider. It is a pure
// function of its arguments, so control planes with the same statistics and the same
// previous step agree.
func (r rule) nextStep(cfg *config.Config, prev WeightStep, epoch int64,
	stats map[routing.EndpointKey]routing.EndpointStat,
) WeightStep {
	next := WeightStep{Epoch: epoch, Endpoints: map[string]Shares{}, Clusters: map[string]Shares{}}
	providerCost := map[string]float64{}
	// penaltyOnly holds providers whose endpoints failed without a single latency: their
	// cost is a penalty factor on the model's neutral latency.
	penaltyOnly := map[string]bool{}
	for i := range cfg.Providers {
		p := &cfg.Providers[i]
		costs, known, timed := r.endpointCosts(p, stats)
		cur := prev.Endpoints[p.Name]
		if !sameMembers(cur, costs) {
			cur = configuredShares(p)
		}
		sh := cur
		if len(costs) > 1 {
			sh = r.move(cur, r.target(costs))
			next.Endpoints[p.Name] = sh
		}
		if known {
			var c float64
			for addr, s := range sh {
				c += s * costs[addr]
			}
			providerCost[p.Name] = c
			penaltyOnly[p.Name] = !timed
		}
	}

	for _, m := range cfg.Models {
		providers := cfg.PrimaryProvidersFor(m.Name)
		if m.Kind != config.KindChat || len(providers) < 2 {
			continue
		}
		costs := Shares{}
		for _, p := range providers {
			costs[p.Name] = math.NaN()
			if c, ok := providerCost[p.Name]; ok && !penaltyOnly[p.Name] {
				costs[p.Name] = c
			}
		}
		fillNeutral(costs)
		for _, p := range providers {
			if penaltyOnly[p.Name] {
				costs[p.Name] *= providerCost[p.Name]
			}
		}
		cur := prev.Clusters[m.Name]
		if !sameMembers(cur, costs) {
			cur = equalShares(costs)
		}
		next.Clusters[m.Name] = r.move(cur, r.target(costs))
	}
	return next
}

// endpointCosts returns each endpoint's cost: its expected time for a reference answer
// times its failure penalties. An endpoint without fresh latency takes the mean of its
// cluster's, in proportion to how stale its own is. known reports whether any endpoint of p
// has statistics, timed whether any has a latency; without one, costs are relative to 1.
func (r rule) endpointCosts(p *config.Provider, stats map[routing.EndpointKey]routing.EndpointStat,
) (costs Shares, known, timed bool) {
	lat := Shares{}
	var sum float64
	var n int
	for _, e := range p.Endpoints {
		st, ok := stats[routing.EndpointKey{Provider: p.Name, Endpoint: e.Address}]
		lat[e.Address] = math.NaN()
		known = known || ok
		if ok && st.Latencies > 0 {
			l := (st.TTFB + time.Duration(float64(st.PerToken)*r.refTokens)).Seconds()
			lat[e.Address] = max(l, 1e-6)
			sum += lat[e.Address]
			n++
		}
	}
	neutral := 1.0
	if n > 0 {
		neutral = sum / float64(n)
	}
	costs = Shares{}
	for _, e := range p.Endpoints {
		st := stats[routing.EndpointKey{Provider: p.Name, Endpoint: e.Address}]
		l := lat[e.Address]
		if math.IsNaN(l) {
			l = neutral
		} else {
			l = st.Confidence*l + (1-st.Confidence)*neutral
		}
		costs[e.Address] = l * (1 + r.errPenalty*st.ErrorShare + r.limitPenalty*st.RateLimitShare)
	}
	return costs, known, n > 0
}

// target turns costs into target shares: proportional to cost^(−sensitivity), with every
// member raised to at least minShare.
func (r rule) target(costs Shares) Shares {
	raw := Shares{}
	var sum float64
	for k, c := range costs {
		raw[k] = math.Pow(max(c, 1e-9), -r.sensitivity)
		sum += raw[k]
	}
	n := float64(len(costs))
	out := Shares{}
	for k, v := range raw {
		if r.minShare*n >= 1 || sum == 0 || math.IsInf(sum, 0) {
			out[k] = 1 / n
			continue
		}
		out[k] = r.minShare + (1-r.minShare*n)*v/sum
	}
	return out
}

// move steps cur toward target: not at all while every share is within hysteresis of its
// target, else each by at most maxStep, then renormalised.
func (r rule) move(cur, target Shares) Shares {
	var worst float64
	for k, t := range target {
		worst = max(worst, math.Abs(t-cur[k]))
	}
	if worst <= r.hysteresis {
		return cur
	}
	out := Shares{}
	var sum float64
	for k, t := range target {
		d := min(max(t-cur[k], -r.maxStep), r.maxStep)
		out[k] = max(cur[k]+d, r.minShare/2)
		sum += out[k]
	}
	for k := range out {
		out[k] /= sum
	}
	return out
}

// fillNeutral gives members without a cost (NaN) the mean of the others, or 1.
func fillNeutral(costs Shares) {
	var sum float64
	var n int
	for _, c := range costs {
		if !math.IsNaN(c) {
			sum += c
			n++
		}
	}
	neutral := 1.0
	if n > 0 {
		neutral = sum / float64(n)
	}
	for k, c := range costs {
		if math.IsNaN(c) {
			costs[k] = neutral
		}
	}
}

// configuredShares are the shares of p's configured endpoint weights.
func configuredShares(p *config.Provider) Shares {
	out := Shares{}
	var sum float64
	for _, e := range p.Endpoints {
		out[e.Address] += float64(max(e.Weight, 1))
		sum += float64(max(e.Weight, 1))
	}
	for k := range out {
		out[k] /= sum
	}
	return out
}

func equalShares(members Shares) Shares {
	out := Shares{}
	for k := range members {
		out[k] = 1 / float64(len(members))
	}
	return out
}

func sameMembers(a, b Shares) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			return false
		}
	}
	return true
}

// integerWeights turns shares into weights out of [weightScale], each at least 1: Envoy
// rejects 0 and gRPC clients NACK it (envoy-notes §5.5).
func integerWeights(s Shares) map[string]uint32 {
	out := make(map[string]uint32, len(s))
	for _, k := range sortedShareKeys(s) {
		out[k] = uint32(max(math.Round(s[k]*weightScale), 1))
	}
	return out
}

func sortedShareKeys(s Shares) []string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
