package routing

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/phochat/phogate/internal/config"
)

// testConfig has a budget, a standard and a premium chat model and three tiers: free may
// use the two cheaper models and refuses others, basic may use only mini and downgrades,
// pro may use everything.
const testConfig = `
providers:
  - name: p
    base_url: http://127.0.0.1:1/v1
    models: [mini, mid, big, emb]
models:
  - {name: mini, tier: budget, price: {input: 0.15, output: 0.60}}
  - {name: mid, tier: standard, price: {input: 1.00, output: 4.00}}
  - {name: big, tier: premium, price: {input: 2.50, output: 10.00}}
  - {name: emb, kind: embedding, tier: budget, price: {input: 0.02, output: 0}}
ledger:
  tiers:
    - {name: free, models: [mini, mid]}
    - {name: basic, models: [mini]}
    - {name: pro}
routing:
  tiers:
    - {name: basic, explicit_disallowed: downgrade}
`

func newTestRouter(t testing.TB, extra string, stats *LatencyStats) *Router {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig + extra))
	if err != nil {
		t.Fatalf("config.Parse = %v", err)
	}
	r, err := NewRouter(cfg, stats)
	if err != nil {
		t.Fatalf("NewRouter = %v", err)
	}
	return r
}

func TestRouteScoring(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{
			name: "simple question goes to the budget model",
			req:  Request{Model: "auto", Messages: user("hi!"), RemainingBudgetUSD: -1},
			want: "mini",
		},
		{
			name: "complex question goes to the premium model when the budget allows",
			req: Request{Model: "auto", Messages: user(codeQuestion),
				RemainingBudgetUSD: 100},
			want: "big",
		},
		{
			name: "complex question with unlimited budget goes to the premium model",
			req:  Request{Model: "auto", Messages: user(mathWordProblem), RemainingBudgetUSD: -1},
			want: "big",
		},
		{
			name: "near-zero budget pushes a complex question to the cheap model",
			req: Request{Model: "auto", Messages: user(codeQuestion),
				RemainingBudgetUSD: 0.02},
			want: "mini",
		},
		{
			name: "budget below every candidate's cost gets the cheapest",
			req: Request{Model: "auto", Messages: user(codeQuestion),
				RemainingBudgetUSD: 0},
			want: "mini",
		},
		{
			name: "free tier's complex question stays within its models",
			req: Request{Model: "auto", Tier: "free", Messages: user(codeQuestion),
				RemainingBudgetUSD: -1},
			want: "mid",
		},
		{
			name: "explicit allowed model is kept",
			req:  Request{Model: "big", Messages: user("hi"), Tier: "pro"},
			want: "big",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRouter(t, "", nil)
			d, err := r.Route(tt.req)
			if err != nil {
				t.Fatalf("Route() error = %v", err)
			}
			if d.Model != tt.want {
				t.Errorf("Route().Model = %q, want %q; decision %v", d.Model, tt.want,
					d.LogValue())
			}
		})
	}
}

// TestRoutePreference checks that each hint changes a choice that goes the other way
// without it, rather than only confirming it.
func TestRoutePreference(t *testing.T) {
	// stats measures big fastest and mini slowest.
	stats := NewLatencyStats(time.Minute, nil)
	stats.Observe("mini", 600*time.Millisecond, 8*time.Second, 300)
	stats.Observe("mid", 400*time.Millisecond, 6*time.Second, 300)
	stats.Observe("big", 200*time.Millisecond, 4*time.Second, 300)

	tests := []struct {
		name     string
		stats    *LatencyStats
		question string
		pref     Preference
		without  string // the choice with no hint
		want     string
	}{
		{"fast picks the fastest measured model", stats,
			"Why is the sky blue? Explain step by step.", PreferFast, "mid", "big"},
		{"cheap picks a cheaper model", nil, mathWordProblem, PreferCheap, "big", "mid"},
		{"quality picks a stronger model", stats, "Explain how rainbows form.",
			PreferQuality, "mini", "mid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRouter(t, "", tt.stats)
			req := Request{Model: "auto", Messages: user(tt.question), RemainingBudgetUSD: -1}
			got := map[string]string{}
			for _, p := range []Preference{PreferNone, tt.pref} {
				req.Preference = p
				d, err := r.Route(req)
				if err != nil {
					t.Fatalf("Route(%v) error = %v", p, err)
				}
				got[p.String()] = d.Model
			}
			want := map[string]string{"": tt.without, tt.pref.String(): tt.want}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Route() model by preference (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRouteTierPolicy(t *testing.T) {
	tests := []struct {
		name           string
		extra          string
		req            Request
		want           string
		wantDowngraded bool
		wantErr        error
	}{
		{
			name:    "refused",
			req:     Request{Model: "big", Tier: "free", Messages: user("hi")},
			wantErr: ErrModelNotAllowed,
		},
		{
			name: "downgraded to the tier's model",
			req: Request{Model: "big", Tier: "basic", Messages: user(codeQuestion),
				RemainingBudgetUSD: -1},
			want: "mini", wantDowngraded: true,
		},
		{
			name:  "downgrade by default for every tier",
			extra: "  explicit_disallowed: downgrade\n",
			req: Request{Model: "big", Tier: "free", Messages: user(codeQuestion),
				RemainingBudgetUSD: -1},
			want: "mid", wantDowngraded: true,
		},
		{
			name: "allowed explicit model",
			req:  Request{Model: "mid", Tier: "free", Messages: user("hi")},
			want: "mid",
		},
		{
			name: "no tier may use everything",
			req:  Request{Model: "big", Messages: user("hi")},
			want: "big",
		},
		{
			name:    "unknown model",
			req:     Request{Model: "gpt-9", Tier: "pro"},
			wantErr: ErrUnknownModel,
		},
		{
			name:    "unknown tier",
			req:     Request{Model: "auto", Tier: "gold"},
			wantErr: ErrUnknownTier,
		},
		{
			name:    "tier with no chat candidate",
			extra:   "  candidates: [big]\n",
			req:     Request{Model: "auto", Tier: "basic", Messages: user("hi")},
			wantErr: ErrNoRoute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRouter(t, tt.extra, nil)
			d, err := r.Route(tt.req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Route() error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if d.Model != tt.want || d.Downgraded != tt.wantDowngraded {
				t.Errorf("Route() = %q downgraded %v, want %q downgraded %v", d.Model,
					d.Downgraded, tt.want, tt.wantDowngraded)
			}
		})
	}
}

func TestRouteScoresExplain(t *testing.T) {
	r := newTestRouter(t, "", nil)
	d, err := r.Route(Request{Model: "auto", Tier: "free", Messages: user("hi"),
		PromptTokens: 1000, MaxTokens: 1000, RemainingBudgetUSD: -1})
	if err != nil {
		t.Fatalf("Route() error = %v", err)
	}
	want := []Candidate{
		{Model: "mini", Quality: 1, Cost: 1 - 0.00075/0.005, Speed: 1, Preference: 0.5,
			CostUSD: 0.00075, Affordable: true},
		{Model: "mid", Quality: 1, Cost: 0, Speed: 1, Preference: 0.5, CostUSD: 0.005,
			Affordable: true},
	}
	want[0].Score = 0.4 + 0.3*want[0].Cost + 0.2 + 0.05
	want[1].Score = 0.4 + 0.2 + 0.05
	approx := cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })
	if diff := cmp.Diff(want, d.Scores, approx); diff != "" {
		t.Errorf("Route().Scores (-want +got):\n%s", diff)
	}
	if d.Reason != ReasonBestScore || d.BudgetPressure != 0 {
		t.Errorf("Route() reason %q pressure %g, want %q 0", d.Reason, d.BudgetPressure,
			ReasonBestScore)
	}
}

func TestDecisionLogLineHasNoText(t *testing.T) {
	const secret = "my password is hunter2"
	r := newTestRouter(t, "", nil)
	d, err := r.Route(Request{Model: "auto", RemainingBudgetUSD: 1, Messages: []Message{
		{Role: "system", Text: secret}, {Role: "user", Text: secret + " why?"},
	}})
	if err != nil {
		t.Fatalf("Route() error = %v", err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("routed", "decision", d)
	line := buf.String()
	if strings.Contains(line, "hunter2") || strings.Contains(line, "password") {
		t.Errorf("log line holds message text: %s", line)
	}
	if strings.Count(line, "\n") != 1 {
		t.Errorf("log line spans several lines: %s", line)
	}
	for _, want := range []string{"decision.model=", "decision.reason=", "decision.scores=",
		"decision.complexity.score=", "mini=", "big="} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %q: %s", want, line)
		}
	}
}

func TestParsePreference(t *testing.T) {
	tests := []struct {
		in      string
		want    Preference
		wantErr bool
	}{
		{"", PreferNone, false},
		{"cheap", PreferCheap, false},
		{" Fast ", PreferFast, false},
		{"QUALITY", PreferQuality, false},
		{"free", PreferNone, true},
	}
	for _, tt := range tests {
		got, err := ParsePreference(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParsePreference(%q) = %v, %v; want %v, error %v", tt.in, got, err,
				tt.want, tt.wantErr)
		}
	}
}

func TestRouteAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	r := newTestRouter(t, "", NewLatencyStats(0, nil))
	req := Request{Model: "auto", Messages: user(mathWordProblem), RemainingBudgetUSD: 5}
	if n := testing.AllocsPerRun(100, func() { _, _ = r.Route(req) }); n > 2 {
		t.Errorf("Route allocates %v times per call, want at most 2", n)
	}
}

func BenchmarkRoute(b *testing.B) {
	stats := NewLatencyStats(time.Minute, nil)
	for _, m := range []string{"mini", "mid", "big"} {
		stats.Observe(m, 300*time.Millisecond, 3*time.Second, 200)
	}
	r := newTestRouter(b, "", stats)
	req := Request{Model: "auto", Tier: "pro", RemainingBudgetUSD: 3, Messages: []Message{
		{Role: "system", Text: "You are a helpful assistant."},
		{Role: "user", Text: mathWordProblem},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Route(req); err != nil {
			b.Fatal(err)
		}
	}
}
