package extproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/internal/openai"
	"github.com/phochat/phogate/ledger"
	"github.com/phochat/phogate/routing"
)

// OpenAI error types and codes of the ledger's refusals, as OpenAI's API sends them.
const (
	typeInsufficientQuota = "insufficient_quota"
	codeInvalidAPIKey     = "invalid_api_key"
	codeRateLimited       = "rate_limit_exceeded"
	codeModelNotAllowed   = "model_not_allowed"
	codeUnavailable       = "service_unavailable"
)

// maxCompletionText bounds the answer text kept to estimate the usage of an answer that
// reports none; a longer answer is estimated from its first maxCompletionText bytes.
const maxCompletionText = 256 << 10

// ledgerTimeout bounds each ledger call (Redis, store) of a request.
const ledgerTimeout = 2 * time.Second

// accounting is the server's part of identity, budgets, rate limits and routing; its zero
// value (no ledger, no router) turns them off.
type accounting struct {
	ledger  *ledger.Ledger
	router  *router
	timeout time.Duration
	// degraded is set while the ledger fails for reasons other than the caller, so the
	// outage is logged once.
	degraded atomic.Bool
}

// init sets up accounting from the server's options.
func (a *accounting) init(opts Options, reg prometheus.Registerer) error {
	a.ledger = opts.Ledger
	// Redis calls are bounded by redis.timeout in the client itself; this also bounds the
	// store's, which take longer.
	a.timeout = max(opts.Config.Redis.Timeout.Duration, ledgerTimeout)
	if opts.Router == nil {
		return nil
	}
	var err error
	if a.router, err = newRouter(opts.Router, reg); err != nil {
		return fmt.Errorf("registering routing metrics: %w", err)
	}
	return nil
}

// accountState is the ledger's part of one stream.
type accountState struct {
	principal  ledger.Principal
	identified bool
	// requested is the model the client named ("auto" included).
	requested string
	// prefer is the caller's routing hint.
	prefer routing.Preference
	// admission holds the reservation to settle; nil when the request was not admitted.
	admission *ledger.Admission
	// completion collects answer text, only while the answer reports no usage.
	completion strings.Builder
	settled    bool
}

// headerList reads request headers for [ledger.Ledger.Identify]; Envoy sends lower-case
// names, so lookups fold case.
type headerList []*v3procservicepb.HttpHeaders

func (h headerList) Get(name string) string {
	for _, hv := range h[0].GetHeaders().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			return headerValue(hv.GetRawValue(), hv.GetValue())
		}
	}
	return ""
}

// identify is the identity step of the request headers phase: it names the caller, or
// answers 401 when the credential is missing or unknown. It returns nil to go on. The
// client's credential is never forwarded: routeMutation replaces or removes it.
func (st *stream) identify(ctx context.Context,
	h *v3procservicepb.HttpHeaders) *v3procservicepb.ProcessingResponse {
	a := &st.s.acct
	if a.ledger == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	p, err := a.ledger.Identify(ctx, headerList{h})
	switch {
	case errors.Is(err, ledger.ErrUnauthenticated):
		msg := "Incorrect API key provided."
		if headerList([]*v3procservicepb.HttpHeaders{h}).Get("authorization") == "" {
			msg = "You didn't provide an API key. Send it in the Authorization header " +
				"(Authorization: Bearer YOUR_KEY)."
		}
		return st.fail(&httpError{401, &openai.Error{
			Message: msg, Type: openai.TypeInvalidRequest, Code: codeInvalidAPIKey,
		}})
	case err != nil:
		st.ledgerTrouble("identifying caller", err)
		return st.fail(unavailable("the caller cannot be identified right now"))
	}
	st.acct.principal, st.acct.identified = p, true
	return nil
}

// admit is the budget step of the request body phase, after routing: it checks the rate
// limits and reserves the estimated cost of the served model. Over budget it either refuses
// (429) or, when the ledger downgrades, serves the tier's downgrade model. It returns nil to
// go on.
func (st *stream) admit(ctx context.Context, prompt string) *v3procservicepb.ProcessingResponse {
	a := &st.s.acct
	if a.ledger == nil || !st.acct.identified {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	adm, err := a.ledger.Admit(ctx, st.acct.principal, ledger.Request{
		RequestID: st.rowID(), Model: st.model.Name, Prompt: prompt,
		MaxTokens: int64(st.maxTokens()),
	})
	var (
		rl *ledger.RateLimitedError
		be *ledger.BudgetExceededError
	)
	switch {
	case errors.As(err, &rl):
		return st.rateLimited(rl)
	case errors.As(err, &be):
		return st.fail(&httpError{429, &openai.Error{
			Message: fmt.Sprintf("You exceeded your monthly budget: %d VND remaining of %d VND, "+
				"and this request needs an estimated %d VND.", be.RemainingVND,
				be.Budget.VND(st.s.cfg.Ledger.VNDPerUSD),
				be.Requested.VND(st.s.cfg.Ledger.VNDPerUSD)),
			Type: typeInsufficientQuota, Code: typeInsufficientQuota,
		}})
	case err != nil:
		// Budgets cannot be enforced: refuse rather than let spending run unchecked.
		st.ledgerTrouble("admitting request", err)
		return st.fail(unavailable("usage accounting is unavailable right now"))
	}
	a.recovered(st)
	st.acct.admission = adm
	st.s.acct.router.remember(st.acct.principal.UserID, adm)
	if adm.Downgraded && adm.Model != st.model.Name {
		m, ok := st.s.cfg.Model(adm.Model)
		if !ok {
			// Config validation names only configured models as downgrade targets.
			return st.fail(unavailable("the downgrade model is not configured"))
		}
		st.log.Debug("downgraded over budget", "requested_model", st.model.Name,
			"model", m.Name)
		st.model = m
	}
	return nil
}

// rateLimited answers 429 with retry-after in whole seconds.
func (st *stream) rateLimited(rl *ledger.RateLimitedError) *v3procservicepb.ProcessingResponse {
	secs := int((rl.RetryAfter + time.Second - 1) / time.Second)
	typ := "requests"
	if strings.HasSuffix(rl.Reason, "tpm") {
		typ = "tokens"
	}
	scope := "your"
	if strings.HasPrefix(rl.Reason, "tier") {
		scope = "your tier's"
	}
	resp := st.fail(&httpError{429, &openai.Error{
		Message: fmt.Sprintf("Rate limit reached: %s %s per minute are used up. "+
			"Try again in %ds.", scope, typ, secs),
		Type: typ, Code: codeRateLimited,
	}})
	im := resp.GetImmediateResponse()
	im.Headers.SetHeaders = append(im.Headers.SetHeaders,
		setHeader("retry-after", strconv.Itoa(secs)))
	return resp
}

func unavailable(msg string) *httpError {
	return &httpError{503, &openai.Error{Message: msg, Type: openai.TypeServer,
		Code: codeUnavailable}}
}

// ledgerTrouble logs a ledger failure once per outage; each failure is counted by the
// request metrics as a 503.
func (st *stream) ledgerTrouble(what string, err error) {
	if st.s.acct.degraded.CompareAndSwap(false, true) {
		st.log.Warn("ledger unavailable; refusing requests", "step", what, "err", err)
		return
	}
	st.log.Debug("ledger unavailable", "step", what, "err", err)
}

func (a *accounting) recovered(st *stream) {
	if a.degraded.Load() && a.degraded.CompareAndSwap(true, false) {
		st.log.Info("ledger available again")
	}
}

// maxTokens is the request's completion limit, 0 when it sets none.
func (st *stream) maxTokens() int {
	if st.chat == nil {
		return 0
	}
	raw := st.chat.Raw
	if v := gjson.GetBytes(raw, "max_completion_tokens"); v.Type == gjson.Number {
		return max(int(v.Int()), 0)
	}
	if v := gjson.GetBytes(raw, "max_tokens"); v.Type == gjson.Number {
		return max(int(v.Int()), 0)
	}
	return 0
}

// rowID is the request's ID for its usage row: Envoy's x-request-id, or a new random one.
func (st *stream) rowID() string {
	if st.requestID == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		st.requestID = "phogate-" + hex.EncodeToString(b[:])
	}
	return st.requestID
}

// noteAnswer keeps the text of an answer that reports no usage so far, to estimate its
// usage at the end. data is a chat.completion body or one SSE chunk.
func (st *stream) noteAnswer(data []byte, chunk bool) {
	if st.s.acct.ledger == nil || st.acct.admission == nil || st.hasUsage ||
		st.route != routeChat {
		return
	}
	path := "choices.#.message.content"
	if chunk {
		path = "choices.#.delta.content"
	}
	b := &st.acct.completion
	for _, v := range gjson.GetBytes(data, path).Array() {
		if b.Len() >= maxCompletionText {
			return
		}
		s := v.String()
		b.WriteString(s[:min(len(s), maxCompletionText-b.Len())])
	}
}

// settle is the ledger's part of the end of a request: it settles the reservation with the
// real cost (0 for a cache hit or an answer that failed without usage) and records one usage
// row. Requests refused before admission record nothing. It runs once, from finish, on a
// context of its own, since the stream's may be cancelled.
func (st *stream) settle(elapsed time.Duration) {
	a := &st.s.acct
	adm := st.acct.admission
	if a.ledger == nil || adm == nil || st.acct.settled {
		return
	}
	st.acct.settled = true
	row := ledger.Row{
		RequestID: st.rowID(), UserID: st.acct.principal.UserID, Tier: st.acct.principal.Tier,
		RequestedModel: st.acct.requested, ServedModel: st.model.Name,
		Latency: elapsed, Status: st.status, Time: st.start,
		CacheLayer: st.cacheLayerName(),
	}
	if st.provider != nil && row.CacheLayer == "" {
		row.Provider = st.provider.Name
	}
	switch {
	case row.CacheLayer != "":
	case st.hasUsage:
		row.Usage = ledger.Usage{PromptTokens: st.usage.PromptTokens,
			CompletionTokens: st.usage.CompletionTokens}
	case st.answered():
		// The provider answered but reported no usage: count it ourselves.
		row.Usage = ledger.Usage{PromptTokens: adm.PromptTokens,
			CompletionTokens: a.ledger.Estimator().Count(st.model.Name, st.acct.completion.String())}
		row.Estimated = true
	}
	row.Cost = a.ledger.Cost(row.ServedModel, row.Usage)
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	if err := a.ledger.Settle(ctx, adm, row); err != nil {
		st.log.Debug("settling usage", "err", err)
	}
}

// answered reports whether the provider's answer reached the client, wholly or in part, with
// a successful status.
func (st *stream) answered() bool {
	return st.status >= 200 && st.status < 300 && !st.headersAt.IsZero()
}

// cacheLayerName names the cache layer that answered, as usage rows name it, or "".
func (st *stream) cacheLayerName() string {
	if st.cache.hit == nil {
		return ""
	}
	if st.sem.hit != nil {
		return layerSemantic
	}
	switch st.cache.layer {
	case cache.LayerL1:
		return "memory"
	case cache.LayerL2:
		return "redis"
	}
	return string(st.cache.layer)
}
