package ledger

import (
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phochat/phogate/internal/config"
)

const ledgerTestConfig = `
providers:
  - name: p
    base_url: http://127.0.0.1:1/v1
    models: [gpt-4o-mini, gpt-4o]
models:
  - name: gpt-4o-mini
    price: {input: 0.15, output: 0.60, cached_input: 0.075}
  - name: gpt-4o
    price: {input: 2.50, output: 10.00, cached_input: 1.25}
ledger:
  data_dir: %s
  batch: {max_rows: 10, max_delay: 5ms}
  default_output_tokens: 100
  tiers:
    - {name: free, monthly_budget_vnd: 1, models: [gpt-4o-mini]}
    - {name: plus, monthly_budget_vnd: 1000, over_budget: downgrade, downgrade_to: gpt-4o-mini}
    - {name: pro, rpm: 2}
  api_keys:
    - {key: sk-phogate-demo, user: demo, tier: free}
    - {key_env: TEST_PLUS_KEY, user: pat, tier: plus}
    - {key: sk-pro, user: pro-user, tier: pro}
`

func newTestLedger(t *testing.T) (*Ledger, *prometheus.Registry, string) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(fmt.Sprintf(ledgerTestConfig, dir)))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	l, err := New(testContext(t), Options{Config: cfg, Registerer: reg,
		Getenv: func(k string) string { return map[string]string{"TEST_PLUS_KEY": "sk-plus"}[k] }})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l, reg, cfg.Ledger.EmbeddedPath
}

func bearer(key string) http.Header { return http.Header{"Authorization": {"Bearer " + key}} }

func TestLedgerRequestFlow(t *testing.T) {
	ctx := testContext(t)
	l, reg, dbPath := newTestLedger(t)

	p, err := l.Identify(ctx, bearer("sk-pro"))
	if err != nil || p.UserID != "pro-user" || p.Tier != "pro" {
		t.Fatalf("Identify = %+v, %v, want pro-user on pro", p, err)
	}
	a, err := l.Admit(ctx, p, Request{RequestID: "req-1", Model: "gpt-4o", Prompt: "hello world",
		MaxTokens: 50})
	if err != nil {
		t.Fatalf("Admit: %v", err)
	}
	// 2 prompt tokens at $2.50/M plus 50 output tokens at $10/M.
	if a.PromptTokens != 2 || a.Estimate != 2*2500+50*10000 || a.Model != "gpt-4o" {
		t.Errorf("Admission = %+v, want 2 prompt tokens, estimate 505000, gpt-4o", a)
	}
	u := l.Estimator().Usage("gpt-4o", "hello world", "hi there")
	err = l.Settle(ctx, a, Row{RequestID: "req-1", UserID: p.UserID, Tier: p.Tier,
		RequestedModel: "gpt-4o", ServedModel: a.Model, Provider: "p", Usage: u,
		Estimated: true, Status: 200, Latency: 42 * time.Millisecond})
	if err != nil {
		t.Fatalf("Settle: %v", err)
	}
	// A cache hit costs nothing even though it carries usage.
	b, err := l.Admit(ctx, p, Request{RequestID: "req-2", Model: "gpt-4o", PromptTokens: 5})
	if err != nil {
		t.Fatalf("Admit: %v", err)
	}
	if err := l.Settle(ctx, b, Row{RequestID: "req-2", UserID: p.UserID, Tier: p.Tier,
		ServedModel: "gpt-4o", Usage: Usage{PromptTokens: 5, CompletionTokens: 5},
		CacheLayer: "memory", Status: 200}); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	// The pro tier allows 2 requests a minute.
	_, err = l.Admit(ctx, p, Request{RequestID: "req-3", Model: "gpt-4o"})
	if !errors.Is(err, ErrRateLimited) {
		t.Errorf("third Admit = %v, want ErrRateLimited", err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var cost int64
	var estimated bool
	err = db.QueryRow(`SELECT cost_nano, estimated FROM usage WHERE request_id = 'req-1'`).
		Scan(&cost, &estimated)
	wantCost := int64(Cost(l.prices["gpt-4o"], u))
	if err != nil || cost != wantCost || !estimated {
		t.Errorf("stored req-1: cost %d, estimated %v, err %v; want cost %d, estimated", cost,
			estimated, err, wantCost)
	}
	err = db.QueryRow(`SELECT cost_nano FROM usage WHERE request_id = 'req-2'`).Scan(&cost)
	if err != nil || cost != 0 {
		t.Errorf("stored cache hit: cost %d, err %v; want 0", cost, err)
	}

	wantMetrics := `
# HELP phogate_ledger_rejections_total Requests refused by the ledger, by reason.
# TYPE phogate_ledger_rejections_total counter
phogate_ledger_rejections_total{reason="user_rpm"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantMetrics),
		"phogate_ledger_rejections_total"); err != nil {
		t.Errorf("metrics: %v", err)
	}
	if got := testutil.ToFloat64(l.m.rowsWritten); got != 2 {
		t.Errorf("rows written = %v, want 2", got)
	}
}

func TestLedgerBudgetOutcomes(t *testing.T) {
	ctx := testContext(t)
	l, reg, _ := newTestLedger(t)
	defer func() {
		if err := l.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()

	if _, err := l.Identify(ctx, bearer("sk-nope")); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Identify(unknown) = %v, want ErrUnauthenticated", err)
	}
	demo, err := l.Identify(ctx, bearer("sk-phogate-demo"))
	if err != nil || demo.UserID != "demo" {
		t.Fatalf("Identify(demo) = %+v, %v", demo, err)
	}
	// An alias without a price is estimated at the tier's most expensive model.
	a, err := l.Admit(ctx, demo, Request{Model: "auto", PromptTokens: 1, MaxTokens: 1})
	if err != nil || a.Estimate != 150+600 {
		t.Errorf("Admit(auto) = %+v, %v, want an estimate at gpt-4o-mini's price", a, err)
	}
	if err := l.Cancel(ctx, a); err != nil {
		t.Errorf("Cancel: %v", err)
	}
	// The free tier's budget is 1 VND (40,000 nano-USD): 100 output tokens of gpt-4o-mini
	// (60,000 nano-USD) do not fit, and the tier rejects.
	_, err = l.Admit(ctx, demo, Request{Model: "gpt-4o-mini", PromptTokens: 1})
	var be *BudgetExceededError
	if !errors.As(err, &be) || be.Remaining != 40_000 {
		t.Errorf("Admit(free over budget) = %v, want BudgetExceededError with 40000 left", err)
	}

	// The plus tier (1000 VND = $0.04) downgrades: gpt-4o's estimate does not fit, mini's
	// does.
	plus, err := l.Identify(ctx, bearer("sk-plus"))
	if err != nil {
		t.Fatal(err)
	}
	a, err = l.Admit(ctx, plus, Request{RequestID: "d1", Model: "gpt-4o", PromptTokens: 20_000,
		MaxTokens: 1000})
	if err != nil || !a.Downgraded || a.Model != "gpt-4o-mini" {
		t.Fatalf("Admit(plus over budget) = %+v, %v, want a downgrade to gpt-4o-mini", a, err)
	}
	if err := l.Cancel(ctx, a); err != nil {
		t.Errorf("Cancel: %v", err)
	}
	if got := testutil.ToFloat64(l.m.downgrades.WithLabelValues("over_budget")); got != 1 {
		t.Errorf("downgrades = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "phogate_ledger_reservations_total"); err != nil || n == 0 {
		t.Errorf("reservations metric: %d series, %v", n, err)
	}
}
