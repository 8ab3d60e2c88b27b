package routing

// budgetPressureBoost is how much a user at the very end of the budget multiplies the cost
// weight by, beyond 1: cost weighs up to three times as much as configured.
const budgetPressureBoost = 2

// scoring holds what one request's candidates are compared against.
type scoring struct {
	r          *Router
	p          *policy
	affordable int
	minSpeed   float64 // slowest affordable candidate's Speed
	minQ, maxQ float64 // quality range of the affordable candidates
	minC, maxC float64 // cost range of the affordable candidates
	w          weights // weights after budget pressure, summing to 1
}

// newScoring fills each candidate's cost and affordability and works out the ranges and the
// weights the parts are compared with.
func (r *Router) newScoring(d *Decision, p *policy, remaining float64) *scoring {
	s := &scoring{r: r, p: p}
	maxAll, cheapest := 0.0, 0
	for i, ci := range p.cands {
		m := &r.cands[ci]
		c := &d.Scores[i]
		c.Model = m.name
		c.CostUSD = float64(d.InputTokens)*m.inPrice + float64(d.OutputTokens)*m.outPrice
		c.Affordable = remaining < 0 || c.CostUSD <= remaining
		if c.Affordable {
			s.affordable++
		}
		maxAll = max(maxAll, c.CostUSD)
		if c.CostUSD < d.Scores[cheapest].CostUSD {
			cheapest = i
		}
	}
	if s.affordable == 0 {
		d.Scores[cheapest].Affordable = true
	}

	first := true
	for i, ci := range p.cands {
		c := &d.Scores[i]
		if !c.Affordable {
			continue
		}
		q := r.cands[ci].quality
		if first {
			s.minQ, s.maxQ, s.minC, s.maxC = q, q, c.CostUSD, c.CostUSD
			first = false
		}
		s.minQ, s.maxQ = min(s.minQ, q), max(s.maxQ, q)
		s.minC, s.maxC = min(s.minC, c.CostUSD), max(s.maxC, c.CostUSD)
	}

	if remaining >= 0 && maxAll > 0 {
		d.BudgetPressure = clamp01(1 - remaining/(r.lowBudget*maxAll))
	}
	w := r.weights
	w.cost *= 1 + budgetPressureBoost*d.BudgetPressure
	sum := w.quality + w.cost + w.speed + w.preference
	if sum > 0 {
		w = weights{w.quality / sum, w.cost / sum, w.speed / sum, w.preference / sum}
	}
	s.w = w
	return s
}

// score fills every affordable candidate's parts and score and returns the index of the best:
// the highest score, then the lower cost, then the earlier in configuration.
func (s *scoring) score(d *Decision, pref Preference) int {
	s.speeds(d)
	need := s.need(d.Complexity.Score)
	best := -1
	for i := range d.Scores {
		c := &d.Scores[i]
		if !c.Affordable {
			continue
		}
		q := s.r.cands[s.p.cands[i]].quality
		c.Quality = s.quality(need, q)
		c.Cost = 1
		if s.maxC > 0 {
			c.Cost = 1 - c.CostUSD/s.maxC
		}
		c.Preference = s.preference(c, q, pref)
		c.Score = s.w.quality*c.Quality + s.w.cost*c.Cost + s.w.speed*c.Speed +
			s.w.preference*c.Preference
		if best < 0 || c.Score > d.Scores[best].Score ||
			c.Score == d.Scores[best].Score && c.CostUSD < d.Scores[best].CostUSD {
			best = i
		}
	}
	return best
}

// need is the quality a question of complexity cx needs: the weakest candidate's at or below
// the simple threshold, the strongest's at or above the complex one, linear between.
func (s *scoring) need(cx float64) float64 {
	frac := clamp01((cx - s.r.simple) / (s.r.complex - s.r.simple))
	return s.minQ + (s.maxQ-s.minQ)*frac
}

// quality is 1 for a model that meets the need, falling linearly with the shortfall to 0 for
// a shortfall as wide as the candidates' whole quality range.
func (s *scoring) quality(need, q float64) float64 {
	spread := s.maxQ - s.minQ
	if spread <= 0 {
		return 1
	}
	return clamp01(1 - max(0, need-q)/spread)
}

// speeds sets each affordable candidate's Speed to fastest/expected time. A candidate with no
// measurement gets the mean of the measured ones, and when none is measured all get 1.
func (s *scoring) speeds(d *Decision) {
	fastest, known := -1.0, 0
	for i := range d.Scores {
		c := &d.Scores[i]
		c.Speed = -1
		if !c.Affordable || s.r.stats == nil {
			continue
		}
		if l, ok := s.r.stats.Get(c.Model); ok {
			c.Speed = l.Expected(d.OutputTokens).Seconds()
			if fastest < 0 || c.Speed < fastest {
				fastest = c.Speed
			}
			known++
		}
	}
	sum := 0.0
	for i := range d.Scores {
		c := &d.Scores[i]
		if c.Speed < 0 {
			continue
		}
		if c.Speed > 0 {
			c.Speed = fastest / c.Speed
		} else {
			c.Speed = 1
		}
		sum += c.Speed
	}
	unknown := 1.0
	if known > 0 {
		unknown = sum / float64(known)
	}
	s.minSpeed = 1
	for i := range d.Scores {
		c := &d.Scores[i]
		if !c.Affordable {
			c.Speed = 0
			continue
		}
		if c.Speed < 0 {
			c.Speed = unknown
		}
		s.minSpeed = min(s.minSpeed, c.Speed)
	}
}

// preference rates how well a candidate fits the hint, from 0 (worst of the candidates) to 1
// (best) on the axis the user asked for. With no hint every candidate gets 0.5, so the part
// decides nothing.
func (s *scoring) preference(c *Candidate, q float64, pref Preference) float64 {
	switch pref {
	case PreferCheap:
		return span01(s.maxC-c.CostUSD, s.maxC-s.minC)
	case PreferQuality:
		return span01(q-s.minQ, s.maxQ-s.minQ)
	case PreferFast:
		// Speed runs from the slowest's fastest/expected ratio up to 1; stretch it to [0, 1].
		return span01(c.Speed-s.minSpeed, 1-s.minSpeed)
	}
	return 0.5
}

func span01(x, span float64) float64 {
	if span <= 0 {
		return 1
	}
	return clamp01(x / span)
}
