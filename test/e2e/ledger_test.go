package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/ledger"
	"github.com/phochat/phogate/test/testenv"
)

// ledgerTestTimeout bounds the ledger's end-to-end tests, which send thousands of requests.
const ledgerTestTimeout = 3 * time.Minute

// ledgerStack starts a gateway over the alpha and beta fakes with the cache off, Redis at
// redisURL and the ledger in PostgreSQL at dsn, with its own spool; ledgerYAML holds the
// tiers and keys.
func ledgerStack(t *testing.T, fakes *fakeSet, redisURL, dsn, ledgerYAML string) *stack {
	t.Helper()
	cfg := twoProviders(fakes) + fmt.Sprintf(`cache: {enabled: false}
redis:
  url: %s
  timeout: 2s
ledger:
  dsn: %s
  data_dir: %s
  batch: {max_rows: 500, max_delay: 50ms}
  key_cache: {ttl: 30m}
%s`, redisURL, dsn, t.TempDir(), ledgerYAML)
	return startStack(t, stackOptions{Config: cfg,
		Env: []string{"E2E_ALPHA_KEY=sk-alpha", "E2E_BETA_KEY=sk-beta"}})
}

// chatResult is what a client saw of one chat completion.
type chatResult struct {
	status int
	usage  ledger.Usage
}

// postChat sends one non-streaming chat completion with the test key.
func postChat(ctx context.Context, client *http.Client, baseURL, body string) (chatResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/chat/completions",
		bytes.NewBufferString(body))
	if err != nil {
		return chatResult{}, err
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return chatResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return chatResult{}, err
	}
	r := chatResult{status: resp.StatusCode}
	if resp.StatusCode == http.StatusOK {
		var v struct {
			Usage struct {
				PromptTokens     int64 `json:"prompt_tokens"`
				CompletionTokens int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return r, fmt.Errorf("answer %s: %w", b, err)
		}
		r.usage = ledger.Usage{PromptTokens: v.Usage.PromptTokens,
			CompletionTokens: v.Usage.CompletionTokens}
	}
	return r, nil
}

// usageTotals reads the usage table.
type usageTotals struct {
	rows, prompt, completion, cost, maxCost int64
}

func readUsage(ctx context.Context, t *testing.T, dsn string) (usageTotals, error) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return usageTotals{}, err
	}
	defer conn.Close(ctx)
	var u usageTotals
	err = conn.QueryRow(ctx, `SELECT count(*), coalesce(sum(prompt_tokens), 0),
		coalesce(sum(completion_tokens), 0), coalesce(sum(cost_nano), 0),
		coalesce(max(cost_nano), 0) FROM usage`).Scan(&u.rows, &u.prompt, &u.completion,
		&u.cost, &u.maxCost)
	return u, err
}

// waitRows polls the usage table until it holds want rows, and returns its totals.
func waitRows(ctx context.Context, t *testing.T, dsn string, want int64) usageTotals {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		u   usageTotals
		err error
	)
	for {
		u, err = readUsage(ctx, t, dsn)
		if err == nil && u.rows >= want {
			return u
		}
		select {
		case <-ctx.Done():
			t.Fatalf("usage table: %d rows (err %v), want %d", u.rows, err, want)
		case <-tick.C:
		}
	}
}

// TestLedgerBudgetAcrossGateways sends 200 parallel requests of one user through two
// gateways that share Redis and PostgreSQL: together they never let the user spend more
// than the monthly budget plus one request's cost.
func TestLedgerBudgetAcrossGateways(t *testing.T) {
	const (
		requests  = 200
		budgetVND = 20
		vndPerUSD = 25000
	)
	ctx, cancel := context.WithTimeout(t.Context(), ledgerTestTimeout)
	defer cancel()
	fakes := startFakes(t, "alpha", "beta")
	dsn := testenv.PostgresURL(t)
	rurl := redisURL(testenv.Redis(t))
	tiers := fmt.Sprintf(`  vnd_per_usd: %d
  tiers: [{name: small, monthly_budget_vnd: %d}]
  api_keys: [{key: %s, user: spender}]
`, vndPerUSD, budgetVND, testAPIKey)
	stacks := []*stack{ledgerStack(t, fakes, rurl, dsn, tiers),
		ledgerStack(t, fakes, rurl, dsn, tiers)}

	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"model":"gpt-4o-mini","max_tokens":8,`+
				`"messages":[{"role":"user","content":"question %d about budgets"}]}`, i)
			r, err := postChat(ctx, http.DefaultClient, stacks[i%2].BaseURL, body)
			switch {
			case err != nil:
				t.Errorf("request %d: %v", i, err)
			case r.status == http.StatusOK:
				ok.Add(1)
			case r.status == http.StatusTooManyRequests:
				refused.Add(1)
			default:
				t.Errorf("request %d: status %d, want 200 or 429", i, r.status)
			}
		}()
	}
	wg.Wait()
	if ok.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("%d served, %d refused; want both, for the budget to be tested", ok.Load(),
			refused.Load())
	}

	u := waitRows(ctx, t, dsn, ok.Load())
	budget := int64(ledger.USDFromVND(budgetVND, vndPerUSD))
	t.Logf("%d served, %d refused; spent %d of %d nano-USD (largest request %d)", ok.Load(),
		refused.Load(), u.cost, budget, u.maxCost)
	if u.rows != ok.Load() {
		t.Errorf("usage rows = %d, want %d (one per served request)", u.rows, ok.Load())
	}
	if u.cost > budget+u.maxCost {
		t.Errorf("spent %d nano-USD, want at most the budget %d plus one request's %d",
			u.cost, budget, u.maxCost)
	}
}

// TestLedgerSurvivesPostgresOutage serves 10,000 requests while PostgreSQL is down; once it
// is back, the usage table holds exactly one row per request with the usage the client saw.
func TestLedgerSurvivesPostgresOutage(t *testing.T) {
	const (
		requests = 10000
		workers  = 32
	)
	ctx, cancel := context.WithTimeout(t.Context(), ledgerTestTimeout)
	defer cancel()
	fakes := startFakes(t, "alpha", "beta")
	dsn, stop, restart := testenv.StartPostgres(t)
	s := ledgerStack(t, fakes, redisURL(testenv.Redis(t)), dsn, fmt.Sprintf(`  tiers: [{name: open}]
  api_keys: [{key: %s, user: steady}]
`, testAPIKey))
	// Identify the key once, so the gateway's key cache answers while PostgreSQL is down.
	waitHTTPAuth(t, s.BaseURL+"/models")
	stop()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	start := time.Now()
	var (
		mu   sync.Mutex
		seen ledger.Usage
		cost ledger.USD
	)
	price := ledger.PriceFromConfig(config.Price{Input: 0.15, Output: 0.60})
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				body := fmt.Sprintf(`{"model":"gpt-4o-mini","max_tokens":8,`+
					`"messages":[{"role":"user","content":"outage question number %d"}]}`, i)
				r, err := postChat(ctx, client, s.BaseURL, body)
				if err != nil || r.status != http.StatusOK {
					t.Errorf("request %d: status %d, err %v", i, r.status, err)
					continue
				}
				mu.Lock()
				seen.PromptTokens += r.usage.PromptTokens
				seen.CompletionTokens += r.usage.CompletionTokens
				cost += ledger.Cost(price, r.usage)
				mu.Unlock()
			}
		}()
	}
	for i := range requests {
		if ctx.Err() != nil || t.Failed() {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	t.Logf("%d requests with PostgreSQL down in %v", requests, time.Since(start))
	if t.Failed() {
		return
	}

	restart()
	u := waitRows(ctx, t, dsn, requests)
	want := usageTotals{rows: requests, prompt: seen.PromptTokens,
		completion: seen.CompletionTokens, cost: int64(cost)}
	u.maxCost = 0
	if u != want {
		t.Errorf("usage table = %+v, want %+v (what the clients saw)", u, want)
	}
}

// waitHTTPAuth polls url with the test key until it answers 200.
func waitHTTPAuth(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not answer 200: last error %v", url, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
