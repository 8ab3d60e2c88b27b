package main

import (
	"fmt"
	"io"
	"slices"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/routing"
)

// setting is one router configuration in the sweep. Speed and preference keep their default
// weights (0.2 and 0.1); quality and cost share the remaining 0.7.
type setting struct {
	name            string
	simple, complex float64
	quality, cost   float64
}

const defaultSettingName = "router (defaults)"

// settings are the router's default followed by a sweep of the complexity thresholds (the
// window shifted up and down) and of the quality/cost balance at the default thresholds.
func settings() []setting {
	def := setting{defaultSettingName, config.DefaultComplexitySimple,
		config.DefaultComplexityComplex, config.DefaultWeightQuality, config.DefaultWeightCost}
	out := []setting{def}
	for _, shift := range []float64{-0.3, -0.2, -0.1, 0.1, 0.15, 0.2} {
		s := def
		s.simple, s.complex = def.simple+shift, min(1, def.complex+shift)
		s.name = fmt.Sprintf("thresholds %.2f-%.2f", s.simple, s.complex)
		out = append(out, s)
	}
	for _, q := range []float64{0.6, 0.5, 0.3, 0.2} {
		s := def
		s.quality, s.cost = q, 0.7-q
		s.name = fmt.Sprintf("weights q=%.1f c=%.1f", s.quality, s.cost)
		out = append(out, s)
	}
	return out
}

// pair names the strong and weak models and their prices.
type pair struct {
	strong, weak   string
	pStrong, pWeak price
}

// newRouter builds a router over the pair with the setting's thresholds and weights. The
// strong model is premium (quality 0.9) and the weak one budget (quality 0.6), the defaults
// for those tiers.
func newRouter(p pair, s setting) (*routing.Router, error) {
	yml := fmt.Sprintf(`
providers:
  - {name: eval, base_url: "http://127.0.0.1:1/v1", models: [%[1]q, %[2]q]}
models:
  - {name: %[1]q, tier: premium, price: {input: %[3]g, output: %[4]g}}
  - {name: %[2]q, tier: budget, price: {input: %[5]g, output: %[6]g}}
routing:
  complexity: {simple: %[7]g, complex: %[8]g}
  weights: {quality: %[9]g, cost: %[10]g, speed: 0.2, preference: 0.1}
`, p.strong, p.weak, p.pStrong.Input, p.pStrong.Output, p.pWeak.Input, p.pWeak.Output,
		s.simple, s.complex, s.quality, s.cost)
	cfg, err := config.Parse([]byte(yml))
	if err != nil {
		return nil, fmt.Errorf("router config %q: %w", s.name, err)
	}
	return routing.NewRouter(cfg, nil)
}

// routeAll returns, for each item, whether the router sends it to the strong model. The
// router sees the prompt as a one-message conversation with an unlimited budget and no
// latency measurements, so its choice rests on complexity and price.
func routeAll(r *routing.Router, p pair, items []item) ([]bool, error) {
	out := make([]bool, len(items))
	for i, it := range items {
		d, err := r.Route(routing.Request{
			Model:              r.AutoModel(),
			Messages:           []routing.Message{{Role: "user", Text: it.prompt}},
			RemainingBudgetUSD: -1,
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", it.id, err)
		}
		out[i] = d.Model == p.strong
	}
	return out, nil
}

// result is one policy's outcome on one dataset.
type result struct {
	name        string
	strongShare float64
	quality     float64
	oracle      float64 // best quality any policy reaches with as many strong calls
	random      float64 // expected quality of random choice with as many strong calls
	cost        float64
	relCost     float64
}

// evaluate measures the choices: strong[i] sends item i to the strong model.
func evaluate(name string, items []item, strong []bool, p pair) result {
	var q, cost, strongCost float64
	n := 0
	for i, it := range items {
		strongCost += p.pStrong.cost(it.strongTok)
		if strong[i] {
			n++
			q += it.strongQ
			cost += p.pStrong.cost(it.strongTok)
		} else {
			q += it.weakQ
			cost += p.pWeak.cost(it.weakTok)
		}
	}
	N := float64(len(items))
	wMean, sMean := means(items)
	res := result{
		name: name, strongShare: float64(n) / N, quality: q / N,
		oracle: oracleAt(items, n), cost: cost, relCost: cost / strongCost,
	}
	res.random = wMean + res.strongShare*(sMean-wMean)
	return res
}

func means(items []item) (weak, strong float64) {
	for _, it := range items {
		weak += it.weakQ
		strong += it.strongQ
	}
	return weak / float64(len(items)), strong / float64(len(items))
}

// oracleAt is the best mean quality with at most k strong calls: the strong model answers the
// k items where it gains most over the weak one, when it gains at all.
func oracleAt(items []item, k int) float64 {
	gains := make([]float64, len(items))
	total := 0.0
	for i, it := range items {
		gains[i] = it.strongQ - it.weakQ
		total += it.weakQ
	}
	slices.Sort(gains)
	slices.Reverse(gains)
	for _, g := range gains[:k] {
		if g <= 0 {
			break
		}
		total += g
	}
	return total / float64(len(items))
}

// oracle sends to the strong model exactly the items where its answer is better.
func oracle(items []item) []bool {
	out := make([]bool, len(items))
	for i, it := range items {
		out[i] = it.strongQ > it.weakQ
	}
	return out
}

func constant(n int, strong bool) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = strong
	}
	return out
}

// evalDataset runs every policy on items.
func evalDataset(items []item, p pair) ([]result, error) {
	res := []result{
		evaluate("always strong", items, constant(len(items), true), p),
		evaluate("always weak", items, constant(len(items), false), p),
	}
	for _, s := range settings() {
		r, err := newRouter(p, s)
		if err != nil {
			return nil, err
		}
		choice, err := routeAll(r, p, items)
		if err != nil {
			return nil, err
		}
		res = append(res, evaluate(s.name, items, choice, p))
	}
	return append(res, evaluate("oracle (bound)", items, oracle(items), p)), nil
}

// writeTable prints results as a Markdown table. format prints a quality value.
func writeTable(w io.Writer, title string, res []result, format string) {
	fmt.Fprintf(w, "\n%s\n\n", title)
	fmt.Fprintln(w, "| policy | strong calls | quality | oracle at same share | "+
		"random at same share | cost USD | cost vs always-strong |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range res {
		fmt.Fprintf(w, "| %s | %.1f%% | "+format+" | "+format+" | "+format+" | %.4f | %.1f%% |\n",
			r.name, 100*r.strongShare, r.quality, r.oracle, r.random, r.cost, 100*r.relCost)
	}
}
