package extproc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/internal/routeheaders"
	"github.com/phochat/phogate/ledger"
	"github.com/phochat/phogate/routing"
)

// ledgerConfig has a cheap and a premium chat model and four tiers: free (few models, one
// request per minute for rpm tests is set per test), tiny (a budget of 1 VND that refuses),
// plus (the same budget, downgrading to the cheap model) and pro (unlimited).
const ledgerConfig = `
providers:
  - name: openai
    base_url: http://127.0.0.1:1/v1
    models:
      - gpt-4o-mini
      - {name: gpt-4o, upstream_name: gpt-4o-2024-08-06}
      - text-embedding-3-small
models:
  - {name: gpt-4o-mini, tier: budget, price: {input: 0.15, output: 0.60}}
  - {name: gpt-4o, tier: premium, price: {input: 2.50, output: 10.00}}
  - {name: text-embedding-3-small, kind: embedding, tier: budget, price: {input: 0.02, output: 0}}
ledger:
  data_dir: %s
  batch: {max_delay: 10ms}
  identity: {default_tier: pro}
  tiers:
    - {name: free, rpm: %d, models: [gpt-4o-mini, text-embedding-3-small]}
    - {name: tiny, monthly_budget_vnd: 1}
    - {name: plus, monthly_budget_vnd: 1, over_budget: downgrade, downgrade_to: gpt-4o-mini}
    - {name: pro}
  api_keys:
    - {key: sk-free, user: u-free, tier: free}
    - {key: sk-tiny, user: u-tiny, tier: tiny}
    - {key: sk-plus, user: u-plus, tier: plus}
    - {key: sk-pro, user: u-pro, tier: pro}
`

// captureStore is the SQLite store, keeping a copy of every usage row written.
type captureStore struct {
	ledger.Store
	mu   sync.Mutex
	rows []ledger.Row
}

func (c *captureStore) WriteUsage(ctx context.Context, rows []ledger.Row) (int64, error) {
	c.mu.Lock()
	c.rows = append(c.rows, rows...)
	c.mu.Unlock()
	return c.Store.WriteUsage(ctx, rows)
}

// ledgerEnv is a server with a ledger over SQLite in a temporary folder and a router.
type ledgerEnv struct {
	*testEnv
	ledger *ledger.Ledger
	store  *captureStore
	closed bool
}

type ledgerEnvOptions struct {
	rpm   int
	cache bool
}

func newLedgerEnv(t *testing.T, o ledgerEnvOptions) *ledgerEnv {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse(fmt.Appendf(nil, ledgerConfig, dir, o.rpm))
	if err != nil {
		t.Fatalf("config.Parse() = %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	sq, err := ledger.OpenSQLite(ctx, filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatalf("OpenSQLite() = %v", err)
	}
	t.Cleanup(func() { sq.Close() })
	store := &captureStore{Store: sq}
	reg := prometheus.NewRegistry()
	l, err := ledger.New(ctx, ledger.Options{Config: cfg, Store: store, Registerer: reg})
	if err != nil {
		t.Fatalf("ledger.New() = %v", err)
	}
	r, err := routing.NewRouter(cfg, nil)
	if err != nil {
		t.Fatalf("NewRouter() = %v", err)
	}
	opts := Options{Config: cfg, Registerer: reg, Ledger: l, Router: r}
	if o.cache {
		c, err := cache.New(cache.Options{Metrics: cache.NewMetrics(reg)})
		if err != nil {
			t.Fatalf("cache.New() = %v", err)
		}
		t.Cleanup(c.Close)
		opts.Cache = c
	}
	le := &ledgerEnv{testEnv: newTestEnvOpts(t, slog.LevelDebug, opts), ledger: l, store: store}
	t.Cleanup(func() { le.flush(t) })
	return le
}

// flush closes the ledger, writing every queued row, and returns the rows written.
func (le *ledgerEnv) flush(t *testing.T) []ledger.Row {
	t.Helper()
	if !le.closed {
		le.closed = true
		ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
		defer cancel()
		if err := le.ledger.Close(ctx); err != nil {
			t.Errorf("ledger.Close() = %v", err)
		}
	}
	le.store.mu.Lock()
	defer le.store.mu.Unlock()
	return append([]ledger.Row(nil), le.store.rows...)
}

// call sends headers (with key as the bearer token unless empty) and body to path and
// returns the reply to the last message sent: the headers reply when it is immediate, else
// the body reply.
func (le *ledgerEnv) call(t *testing.T, path, key, body string,
	kv ...string) (*envoyStream, *v3procservicepb.ProcessingResponse) {
	t.Helper()
	h := []string{":method", "POST", ":path", path, "x-request-id",
		fmt.Sprintf("req-%s-%d", t.Name(), len(body)), "content-type", "application/json"}
	if path == "/v1/models" {
		h[1] = "GET"
	}
	if key != "" {
		h = append(h, "authorization", "Bearer "+key)
	}
	es := le.open(t)
	resp := es.reply(requestHeaders(false, append(h, kv...)...))
	if resp.GetImmediateResponse() != nil || path == "/v1/models" {
		return es, resp
	}
	return es, es.reply(requestBody(body))
}

type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// immediateError checks that resp is an immediate error with status and returns its body.
func immediateError(t *testing.T, resp *v3procservicepb.ProcessingResponse,
	status int) (errorBody, map[string]string) {
	t.Helper()
	ir := resp.GetImmediateResponse()
	if ir == nil {
		t.Fatalf("reply = %v, want an immediate response", resp)
	}
	if got := int(ir.GetStatus().GetCode()); got != status {
		t.Errorf("status = %d, want %d; body %s", got, status, ir.GetBody())
	}
	var eb errorBody
	if err := json.Unmarshal(ir.GetBody(), &eb); err != nil {
		t.Fatalf("error body %s: %v", ir.GetBody(), err)
	}
	return eb, headers(t, ir.GetHeaders())
}

func chatReq(model, q, extra string) string {
	return `{"model":"` + model + `",` + extra + `"messages":[{"role":"user","content":` +
		strconv.Quote(q) + `}]}`
}

func TestLedgerUnauthenticated(t *testing.T) {
	le := newLedgerEnv(t, ledgerEnvOptions{})
	tests := []struct {
		name, path, key, body string
	}{
		{"chat without key", "/v1/chat/completions", "", chatReq("gpt-4o-mini", "hi", "")},
		{"chat with unknown key", "/v1/chat/completions", "sk-nope",
			chatReq("gpt-4o-mini", "hi", "")},
		{"embeddings without key", "/v1/embeddings", "",
			`{"model":"text-embedding-3-small","input":"hi"}`},
		{"models with unknown key", "/v1/models", "sk-nope", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es, resp := le.call(t, tt.path, tt.key, tt.body)
			eb, _ := immediateError(t, resp, 401)
			if eb.Error.Type != "invalid_request_error" || deref(eb.Error.Code) != "invalid_api_key" {
				t.Errorf("error = %+v, want invalid_request_error/invalid_api_key", eb.Error)
			}
			es.expectEOF()
		})
	}
	t.Run("models with key", func(t *testing.T) {
		_, resp := le.call(t, "/v1/models", "sk-pro", "")
		if ir := resp.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 200 {
			t.Errorf("GET /v1/models with a key = %v, want 200", resp)
		}
	})
	if rows := le.flush(t); len(rows) != 0 {
		t.Errorf("usage rows = %d, want none for refused requests", len(rows))
	}
}

func TestLedgerRateLimit(t *testing.T) {
	le := newLedgerEnv(t, ledgerEnvOptions{rpm: 1})
	body := chatReq("gpt-4o-mini", "hello there", "")
	if _, resp := le.call(t, "/v1/chat/completions", "sk-free", body); resp.GetRequestBody() == nil {
		t.Fatalf("first request = %v, want it routed", resp)
	}
	es, resp := le.call(t, "/v1/chat/completions", "sk-free", body)
	eb, h := immediateError(t, resp, 429)
	if deref(eb.Error.Code) != codeRateLimited || eb.Error.Type != "requests" {
		t.Errorf("error = %+v, want requests/%s", eb.Error, codeRateLimited)
	}
	if secs, err := strconv.Atoi(h["retry-after"]); err != nil || secs < 1 {
		t.Errorf("retry-after = %q, want whole seconds ≥ 1", h["retry-after"])
	}
	es.expectEOF()
}

func TestLedgerOverBudget(t *testing.T) {
	le := newLedgerEnv(t, ledgerEnvOptions{})
	es, resp := le.call(t, "/v1/chat/completions", "sk-tiny", chatReq("gpt-4o", "hi", ""))
	eb, _ := immediateError(t, resp, 429)
	if eb.Error.Type != typeInsufficientQuota || !strings.Contains(eb.Error.Message, "VND remaining") {
		t.Errorf("error = %+v, want insufficient_quota naming the VND remaining", eb.Error)
	}
	es.expectEOF()
}

// servedModel returns the routing header and the upstream body's model of a routed request.
func servedModel(t *testing.T, resp *v3procservicepb.ProcessingResponse) (string, string) {
	t.Helper()
	cr := resp.GetRequestBody().GetResponse()
	if cr == nil {
		t.Fatalf("body reply = %v, want it routed", resp)
	}
	h := headers(t, cr.GetHeaderMutation())
	return h[routeheaders.Model], gjson.GetBytes(cr.GetBodyMutation().GetBody(), "model").Str
}

func TestLedgerDowngradeOverBudget(t *testing.T) {
	le := newLedgerEnv(t, ledgerEnvOptions{})
	// gpt-4o's estimate (about 1.2e-4 USD) exceeds 1 VND (4e-5 USD); gpt-4o-mini's fits.
	body := chatReq("gpt-4o", "hi", `"max_tokens":10,`)
	_, resp := le.call(t, "/v1/chat/completions", "sk-plus", body)
	model, bodyModel := servedModel(t, resp)
	if model != "gpt-4o-mini" || bodyModel != "gpt-4o-mini" {
		t.Errorf("served %q with body model %q, want gpt-4o-mini for both", model, bodyModel)
	}
	if v := gatherValue(t, le.reg, "phogate_ledger_downgrades_total"); v != 1 {
		t.Errorf("phogate_ledger_downgrades_total = %v, want 1", v)
	}
}

func TestLedgerAutoRouting(t *testing.T) {
	const codeQuestion = "Why does this Go function deadlock?\n```go\nfunc main() {\n\tch := " +
		"make(chan int)\n\tch <- 1\n\tfmt.Println(<-ch)\n}\n```"
	le := newLedgerEnv(t, ledgerEnvOptions{})
	tests := []struct {
		name, key, question, want, wantBody string
	}{
		{"simple question", "sk-pro", "hi!", "gpt-4o-mini", "gpt-4o-mini"},
		// The provider's own name for gpt-4o is set per upstream attempt, not here.
		{"complex question", "sk-pro", codeQuestion, "gpt-4o", "gpt-4o"},
		{"complex question within the free tier", "sk-free", codeQuestion, "gpt-4o-mini",
			"gpt-4o-mini"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, resp := le.call(t, "/v1/chat/completions", tt.key, chatReq("auto", tt.question, ""))
			model, bodyModel := servedModel(t, resp)
			if model != tt.want || bodyModel != tt.wantBody {
				t.Errorf("served %q with body model %q, want %q and %q", model, bodyModel,
					tt.want, tt.wantBody)
			}
		})
	}
	logs := le.logs.String()
	if !strings.Contains(logs, `"msg":"model routed"`) || !strings.Contains(logs, "scores") {
		t.Errorf("no routing decision logged:\n%s", logs)
	}
	if strings.Contains(logs, "deadlock") {
		t.Errorf("logs hold prompt text:\n%s", logs)
	}
}

func TestLedgerModelNotAllowed(t *testing.T) {
	le := newLedgerEnv(t, ledgerEnvOptions{})
	es, resp := le.call(t, "/v1/chat/completions", "sk-free", chatReq("gpt-4o", "hi", ""))
	eb, _ := immediateError(t, resp, 403)
	if deref(eb.Error.Code) != codeModelNotAllowed {
		t.Errorf("error = %+v, want code %s", eb.Error, codeModelNotAllowed)
	}
	es.expectEOF()
	if v := gatherValue(t, le.reg, "phogate_routing_refusals_total"); v != 1 {
		t.Errorf("phogate_routing_refusals_total = %v, want 1", v)
	}
}

func TestLedgerUsageRows(t *testing.T) {
	le := newLedgerEnv(t, ledgerEnvOptions{cache: true})
	const jsonAnswer = `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello to you"},` +
		`"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":2000,` +
		`"total_tokens":3000}}`
	noUsage := jsonAnswer[:strings.Index(jsonAnswer, `,"usage"`)] + "}"
	body := chatReq("auto", "hi!", "")

	// 1. Upstream answer with usage; 2. the same question from the cache; 3. an answer
	// without usage (estimated); 4. a failed answer.
	es, resp := le.call(t, "/v1/chat/completions", "sk-pro", body, "x-request-id", "r1")
	servedModel(t, resp)
	answer(t, es, "200", "application/json", jsonAnswer, true)
	es.expectEOF()
	es, resp = le.call(t, "/v1/chat/completions", "sk-pro", body, "x-request-id", "r2")
	if resp.GetImmediateResponse() == nil {
		t.Fatalf("second request = %v, want a cache hit", resp)
	}
	es.expectEOF()
	es, _ = le.call(t, "/v1/chat/completions", "sk-pro", chatReq("gpt-4o-mini", "other", ""),
		"x-request-id", "r3")
	answer(t, es, "200", "application/json", noUsage, true)
	es.expectEOF()
	es, _ = le.call(t, "/v1/chat/completions", "sk-pro", chatReq("gpt-4o", "third", ""),
		"x-request-id", "r4")
	answer(t, es, "502", "application/json", `{"error":{"message":"bad gateway"}}`, true)
	es.expectEOF()

	// 1000 input tokens at 0.15 USD/M and 2000 output at 0.60 USD/M: 1.35e-3 USD.
	want := []ledger.Row{
		{RequestID: "r1", UserID: "u-pro", Tier: "pro", RequestedModel: "auto",
			ServedModel: "gpt-4o-mini", Provider: "openai", Status: 200,
			Usage: ledger.Usage{PromptTokens: 1000, CompletionTokens: 2000}, Cost: 1_350_000},
		{RequestID: "r2", UserID: "u-pro", Tier: "pro", RequestedModel: "auto",
			ServedModel: "gpt-4o-mini", Status: 200, CacheLayer: "memory"},
		{RequestID: "r3", UserID: "u-pro", Tier: "pro", RequestedModel: "gpt-4o-mini",
			ServedModel: "gpt-4o-mini", Provider: "openai", Status: 200, Estimated: true},
		{RequestID: "r4", UserID: "u-pro", Tier: "pro", RequestedModel: "gpt-4o",
			ServedModel: "gpt-4o", Provider: "openai", Status: 502},
	}
	rows := le.flush(t)
	ignore := cmpopts.IgnoreFields(ledger.Row{}, "Latency", "Time", "Usage", "Cost")
	byID := cmpopts.SortSlices(func(a, b ledger.Row) bool { return a.RequestID < b.RequestID })
	if diff := cmp.Diff(want, rows, ignore, byID); diff != "" {
		t.Errorf("usage rows (-want +got):\n%s", diff)
	}
	got := map[string]ledger.Row{}
	for _, r := range rows {
		got[r.RequestID] = r
		if r.Latency <= 0 || r.Time.IsZero() {
			t.Errorf("row %s: latency %v, time %v; want both set", r.RequestID, r.Latency, r.Time)
		}
	}
	if r := got["r1"]; r.Usage != want[0].Usage || r.Cost != want[0].Cost {
		t.Errorf("row r1: usage %+v cost %d, want %+v cost %d", r.Usage, r.Cost, want[0].Usage,
			want[0].Cost)
	}
	if r := got["r2"]; r.Cost != 0 {
		t.Errorf("cache hit row cost = %d, want 0", r.Cost)
	}
	if r := got["r3"]; r.Usage.PromptTokens == 0 || r.Usage.CompletionTokens == 0 || r.Cost == 0 {
		t.Errorf("estimated row = %+v, want prompt and completion tokens and a cost", r)
	}
	if r := got["r4"]; r.Cost != 0 {
		t.Errorf("failed answer row cost = %d, want 0", r.Cost)
	}
}
