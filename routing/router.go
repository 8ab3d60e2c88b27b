package routing

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"

	"github.com/phochat/phogate/internal/config"
)

// Errors [Router.Route] returns; test for them with errors.Is.
var (
	// ErrModelNotAllowed means the request names a model its tier may not use, and the tier's
	// policy is to refuse rather than downgrade.
	ErrModelNotAllowed = errors.New("model not allowed for this tier")
	// ErrUnknownModel means the request names a model that is not configured.
	ErrUnknownModel = errors.New("unknown model")
	// ErrUnknownTier means the request names a tier that is not configured.
	ErrUnknownTier = errors.New("unknown tier")
	// ErrNoRoute means no candidate model is left for the request's tier.
	ErrNoRoute = errors.New("no model to route to")
)

// Preference is a user's hint about what matters most in the answer.
type Preference uint8

// Preferences.
const (
	PreferNone Preference = iota
	PreferCheap
	PreferFast
	PreferQuality
)

var preferenceNames = [...]string{"", "cheap", "fast", "quality"}

// String returns the hint's name as written in a request, "" for none.
func (p Preference) String() string {
	if int(p) < len(preferenceNames) {
		return preferenceNames[p]
	}
	return "Preference(" + strconv.Itoa(int(p)) + ")"
}

// ParsePreference reads a hint such as the value of an x-phogate-prefer header: "cheap",
// "fast" or "quality", in any case; "" is [PreferNone]. Anything else is an error.
func ParsePreference(s string) (Preference, error) {
	s = strings.TrimSpace(s)
	for i, name := range preferenceNames {
		if strings.EqualFold(s, name) {
			return Preference(i), nil
		}
	}
	return PreferNone, fmt.Errorf("preference %q must be cheap, fast or quality", s)
}

// Request is what the router needs to know about one chat request.
type Request struct {
	// Model is the model the client asked for: a configured model or the auto model.
	Model string
	// Messages is the conversation. The router reads it and keeps nothing of it.
	Messages []Message
	// PromptTokens is the prompt's token count when the caller has counted it; 0 means the
	// router estimates it from the text's length.
	PromptTokens int
	// MaxTokens is the request's completion limit; 0 means the configured default
	// (ledger.default_output_tokens).
	MaxTokens int
	// Tier is the user's tier under ledger.tiers; "" means no tier, which may use every model.
	Tier string
	// RemainingBudgetUSD is what the user may still spend this period; negative means
	// unlimited.
	RemainingBudgetUSD float64
	// Preference is the user's hint.
	Preference Preference
}

// Decision is the router's answer and its explanation. Its LogValue writes it as one debug
// line, without any message text.
type Decision struct {
	// Model is the chosen configured model.
	Model string
	// Reason says in a short fixed phrase how Model was chosen.
	Reason string
	// Downgraded reports that the request named a model its tier may not use and Model was
	// chosen in its place.
	Downgraded bool
	// Scores are the candidates that were scored, in configuration order; empty when the
	// request named an allowed model. The slice is the caller's.
	Scores []Candidate
	// Complexity is the question's measured complexity; zero when no scoring took place.
	Complexity Complexity
	// InputTokens and OutputTokens are the token counts the cost estimates used.
	InputTokens, OutputTokens int
	// BudgetPressure is how close the user is to the end of the budget, from 0 (far or
	// unlimited) to 1 (nothing left); it raises the weight of cost.
	BudgetPressure float64
}

// Candidate is one model's score. The parts are each from 0 to 1, before weighting.
type Candidate struct {
	// Model is the candidate's name.
	Model string
	// Score is the weighted sum of the parts; the highest wins. It is 0 when not Affordable.
	Score float64
	// Quality is the expected quality for the question's complexity.
	Quality float64
	// Cost is 1 for a free answer and 0 for the most expensive candidate's.
	Cost float64
	// Speed is 1 for the fastest expected answer and less for slower ones.
	Speed float64
	// Preference is how well the model fits the user's hint.
	Preference float64
	// CostUSD is the estimated cost of the request on this model.
	CostUSD float64
	// Affordable reports that CostUSD fits the remaining budget, or that no candidate does
	// and this is the cheapest.
	Affordable bool
}

// Reasons a [Decision] gives.
const (
	ReasonExplicit   = "explicit model"
	ReasonBestScore  = "highest score"
	ReasonOnly       = "only candidate"
	ReasonAffordable = "only affordable candidate"
	ReasonCheapest   = "no candidate affordable; cheapest"
)

// Router chooses models. It is built from a validated configuration, is immutable, and is
// safe for concurrent use; build a new one when the configuration changes.
type Router struct {
	auto      string
	known     map[string]bool // every configured model, chat or not
	cands     []model
	weights   weights
	simple    float64
	complex   float64
	lowBudget float64
	defOutput int
	tiers     map[string]*policy
	open      *policy // for requests with no tier
	stats     *LatencyStats
}

type model struct {
	name              string
	quality           float64
	inPrice, outPrice float64 // USD per token
}

type weights struct{ quality, cost, speed, preference float64 }

// policy is one tier's view of the models.
type policy struct {
	allowed   map[string]bool // nil: every model
	cands     []int           // indices into Router.cands
	downgrade bool
}

// NewRouter builds a router from cfg, which must have come from [config.Load] or
// [config.Parse]. stats feeds the speed part; nil means no measurements, so speed decides
// nothing. The router keeps stats but not cfg.
func NewRouter(cfg *config.Config, stats *LatencyStats) (*Router, error) {
	if cfg == nil {
		return nil, errors.New("routing: nil config")
	}
	rc := &cfg.Routing
	r := &Router{
		auto:      rc.AutoModel,
		known:     map[string]bool{},
		simple:    deref(rc.Complexity.Simple, config.DefaultComplexitySimple),
		complex:   deref(rc.Complexity.Complex, config.DefaultComplexityComplex),
		lowBudget: float64(max(rc.LowBudgetRequests, 1)),
		defOutput: cfg.Ledger.DefaultOutputTokens,
		tiers:     map[string]*policy{},
		stats:     stats,
		weights: weights{
			quality:    deref(rc.Weights.Quality, config.DefaultWeightQuality),
			cost:       deref(rc.Weights.Cost, config.DefaultWeightCost),
			speed:      deref(rc.Weights.Speed, config.DefaultWeightSpeed),
			preference: deref(rc.Weights.Preference, config.DefaultWeightPreference),
		},
	}
	if r.auto == "" {
		r.auto = config.DefaultAutoModel
	}
	if r.defOutput <= 0 {
		r.defOutput = config.DefaultOutputTokens
	}
	if r.complex <= r.simple {
		return nil, fmt.Errorf("routing: complexity thresholds %g and %g are not increasing",
			r.simple, r.complex)
	}
	for _, m := range cfg.Models {
		r.known[m.Name] = true
	}
	for _, name := range rc.Candidates {
		m, ok := cfg.Model(name)
		if !ok {
			return nil, fmt.Errorf("routing: candidate %q: %w", name, ErrUnknownModel)
		}
		r.cands = append(r.cands, model{
			name: m.Name, quality: m.Quality,
			inPrice: m.Price.Input / 1e6, outPrice: m.Price.Output / 1e6,
		})
	}
	r.open = r.newPolicy(nil, false)
	for _, t := range cfg.Ledger.Tiers {
		downgrade := rc.ExplicitDisallowedFor(t.Name) == config.ExplicitDowngrade
		r.tiers[t.Name] = r.newPolicy(t.Models, downgrade)
	}
	return r, nil
}

func deref(p *float64, def float64) float64 {
	if p == nil {
		return def
	}
	return *p
}

func (r *Router) newPolicy(allowed []string, downgrade bool) *policy {
	p := &policy{downgrade: downgrade}
	if len(allowed) > 0 {
		p.allowed = map[string]bool{}
		for _, m := range allowed {
			p.allowed[m] = true
		}
	}
	for i, c := range r.cands {
		if p.allows(c.name) {
			p.cands = append(p.cands, i)
		}
	}
	return p
}

func (p *policy) allows(model string) bool { return p.allowed == nil || p.allowed[model] }

// AutoModel returns the model name that asks the router to choose.
func (r *Router) AutoModel() string { return r.auto }

// Route chooses the model for req. A request naming an allowed model gets it unchanged,
// without scoring. A request naming the auto model, or naming a model its tier may not use
// when the tier downgrades, gets the best-scoring candidate of its tier. Errors are
// [ErrUnknownModel], [ErrUnknownTier], [ErrModelNotAllowed] and [ErrNoRoute], wrapped.
func (r *Router) Route(req Request) (Decision, error) {
	p := r.open
	if req.Tier != "" {
		var ok bool
		if p, ok = r.tiers[req.Tier]; !ok {
			return Decision{}, fmt.Errorf("tier %q: %w", req.Tier, ErrUnknownTier)
		}
	}
	if req.Model == r.auto {
		return r.choose(req, p)
	}

	if !r.known[req.Model] {
		return Decision{}, fmt.Errorf("model %q: %w", req.Model, ErrUnknownModel)
	}
	if p.allows(req.Model) {
		return Decision{Model: req.Model, Reason: ReasonExplicit}, nil
	}
	if !p.downgrade {
		return Decision{}, fmt.Errorf("model %q, tier %q: %w", req.Model, req.Tier,
			ErrModelNotAllowed)
	}
	d, err := r.choose(req, p)
	d.Downgraded = true
	return d, err
}

// choose scores the policy's candidates and returns the best.
func (r *Router) choose(req Request, p *policy) (Decision, error) {
	if len(p.cands) == 0 {
		return Decision{}, fmt.Errorf("tier %q: %w", req.Tier, ErrNoRoute)
	}
	d := Decision{
		Complexity:   Assess(req.Messages),
		InputTokens:  req.PromptTokens,
		OutputTokens: req.MaxTokens,
		Scores:       make([]Candidate, len(p.cands)),
	}
	if d.InputTokens <= 0 {
		d.InputTokens = estimateTokens(req.Messages)
	}
	if d.OutputTokens <= 0 {
		d.OutputTokens = r.defOutput
	}
	s := r.newScoring(&d, p, req.RemainingBudgetUSD)
	best := s.score(&d, req.Preference)
	d.Model = d.Scores[best].Model
	switch {
	case len(d.Scores) == 1:
		d.Reason = ReasonOnly
	case s.affordable == 0:
		d.Reason = ReasonCheapest
	case s.affordable == 1:
		d.Reason = ReasonAffordable
	default:
		d.Reason = ReasonBestScore
	}
	return d, nil
}

// estimateTokens guesses a prompt's tokens at one per four bytes of text, plus four per
// message for the chat format's framing.
func estimateTokens(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		n += 4 + (len(m.Text)+3)/4
	}
	return n
}

// LogValue writes the decision as one group: the model, the reason, the complexity counts and
// each candidate's score parts. It never writes message text.
func (d Decision) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.String("model", d.Model),
		slog.String("reason", d.Reason),
	)
	if d.Downgraded {
		attrs = append(attrs, slog.Bool("downgraded", true))
	}
	if len(d.Scores) == 0 {
		return slog.GroupValue(attrs...)
	}
	attrs = append(attrs,
		slog.Any("complexity", d.Complexity),
		slog.Int("input_tokens", d.InputTokens),
		slog.Int("output_tokens", d.OutputTokens),
		slog.Float64("budget_pressure", round3(d.BudgetPressure)),
		slog.String("scores", formatScores(d.Scores)),
	)
	return slog.GroupValue(attrs...)
}

// formatScores writes "name=score(q=… c=… s=… p=… $cost)" for each candidate, space-separated;
// an unaffordable candidate is marked "unaffordable".
func formatScores(cs []Candidate) string {
	var b []byte
	for i, c := range cs {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, c.Model...)
		b = append(b, '=')
		if !c.Affordable {
			b = append(b, "unaffordable($"...)
			b = strconv.AppendFloat(b, c.CostUSD, 'g', 3, 64)
			b = append(b, ')')
			continue
		}
		b = strconv.AppendFloat(b, c.Score, 'f', 3, 64)
		for _, part := range [...]struct {
			key string
			v   float64
		}{{"(q=", c.Quality}, {" c=", c.Cost}, {" s=", c.Speed}, {" p=", c.Preference}} {
			b = append(b, part.key...)
			b = strconv.AppendFloat(b, part.v, 'f', 2, 64)
		}
		b = append(b, " $"...)
		b = strconv.AppendFloat(b, c.CostUSD, 'g', 3, 64)
		b = append(b, ')')
	}
	return string(b)
}

func clamp01(x float64) float64 {
	if math.IsNaN(x) {
		return 0
	}
	return min(1, max(0, x))
}
