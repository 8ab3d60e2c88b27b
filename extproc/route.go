package extproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"

	"github.com/phochat/phogate/internal/openai"
	"github.com/phochat/phogate/ledger"
	"github.com/phochat/phogate/routing"
)

// headerPrefer carries the caller's routing hint: cheap, fast or quality.
const headerPrefer = "x-phogate-prefer"

// budgetHints bounds the users whose remaining budget is remembered for routing.
const budgetHints = 100000

// router wraps the model router with what the request path adds: each user's remaining
// budget as last seen by this replica, and refusal counts.
type router struct {
	r *routing.Router
	// hints maps a user ID to the budget left before the user's last admitted request on
	// this replica; the router's budget pressure reads it.
	hints    *lru.Cache[string, budgetHint]
	refusals *prometheus.CounterVec
}

type budgetHint struct {
	remaining ledger.USD
	unlimited bool
}

func newRouter(r *routing.Router, reg prometheus.Registerer) (*router, error) {
	hints, err := lru.New[string, budgetHint](budgetHints)
	if err != nil {
		return nil, err
	}
	rt := &router{r: r, hints: hints, refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "phogate_routing_refusals_total",
		Help: "Requests the model router refused, by reason.",
	}, []string{"reason"})}
	if err := reg.Register(rt.refusals); err != nil {
		return nil, err
	}
	return rt, nil
}

// remember keeps the budget the user had before adm's reservation. rt may be nil.
func (rt *router) remember(user string, adm *ledger.Admission) {
	if rt == nil || adm.Reservation == nil {
		return
	}
	res := adm.Reservation
	rt.hints.Add(user, budgetHint{remaining: res.Remaining + res.Amount, unlimited: res.Unlimited})
}

// remaining is the user's remaining budget in USD for [routing.Request], negative when
// unlimited or not known yet.
func (rt *router) remaining(user string) float64 {
	h, ok := rt.hints.Get(user)
	if !ok || h.unlimited {
		return -1
	}
	return max(h.remaining.Dollars(), 0)
}

// readPrefer reads the routing hint header; a bad value is a client error.
func (st *stream) readPrefer(h *v3procservicepb.HttpHeaders) *v3procservicepb.ProcessingResponse {
	v := headerList{h}.Get(headerPrefer)
	if v == "" {
		return nil
	}
	p, err := routing.ParsePreference(v)
	if err != nil {
		return st.fail(badRequest(headerPrefer, "the "+headerPrefer+
			" header must be cheap, fast or quality"))
	}
	st.acct.prefer = p
	return nil
}

// resolveRequested is the model part of step 1: it resolves the requested model, except
// the auto model, which the routing step resolves.
func (st *stream) resolveRequested(name string) *httpError {
	st.acct.requested = name
	if rt := st.s.acct.router; rt != nil && st.route == routeChat && name == rt.r.AutoModel() {
		return nil
	}
	return st.resolveModel(name)
}

// routeAndAdmit is step 2 of the request body phase: the router chooses the served model
// (for the auto model, or by the tier's policy for an explicit one), then the ledger checks
// the rate limits and reserves the cost, which may downgrade the model. It sets st.model,
// the served model, and returns nil to go on.
func (st *stream) routeAndAdmit(ctx context.Context) *v3procservicepb.ProcessingResponse {
	a := &st.s.acct
	if a.ledger == nil && a.router == nil {
		return nil
	}
	prompt, msgs := st.promptText()
	if herr := st.routeModel(ctx, msgs); herr != nil {
		return st.fail(herr)
	}
	return st.admit(ctx, prompt)
}

// routeModel asks the router for the served model.
func (st *stream) routeModel(ctx context.Context, msgs []routing.Message) *httpError {
	rt := st.s.acct.router
	if rt == nil {
		return nil
	}
	req := routing.Request{Model: st.acct.requested, Messages: msgs, MaxTokens: st.maxTokens(),
		Tier: st.tier(), RemainingBudgetUSD: -1, Preference: st.acct.prefer}
	if st.acct.identified {
		req.RemainingBudgetUSD = rt.remaining(st.acct.principal.UserID)
	}
	d, err := rt.r.Route(req)
	if err == nil && d.Downgraded && st.route == routeEmbeddings {
		// The router's candidates are chat models; an embedding model has no substitute.
		err = routing.ErrModelNotAllowed
	}
	if err != nil {
		return st.routeError(err)
	}
	if st.log.Enabled(ctx, slog.LevelDebug) {
		st.log.LogAttrs(ctx, slog.LevelDebug, "model routed",
			slog.String("requested_model", st.acct.requested), slog.Any("decision", d))
	}
	if d.Downgraded && st.s.acct.ledger != nil {
		st.s.acct.ledger.Metrics().Downgrade("model_not_allowed")
	}
	if st.model != nil && d.Model == st.model.Name {
		return nil
	}
	m, ok := st.s.cfg.Model(d.Model)
	if !ok {
		return &httpError{500, &openai.Error{Message: "the router chose an unknown model",
			Type: openai.TypeServer}}
	}
	st.model = m
	return nil
}

func (st *stream) routeError(err error) *httpError {
	rt := st.s.acct.router
	switch {
	case errors.Is(err, routing.ErrModelNotAllowed):
		rt.refusals.WithLabelValues("model_not_allowed").Inc()
		return &httpError{403, &openai.Error{
			Message: fmt.Sprintf("your tier may not use the model %q",
				truncate(st.acct.requested, 200)),
			Type: openai.TypeInvalidRequest, Param: "model", Code: codeModelNotAllowed,
		}}
	case errors.Is(err, routing.ErrNoRoute):
		rt.refusals.WithLabelValues("no_route").Inc()
		return &httpError{403, &openai.Error{
			Message: "your tier may use no model that can answer this request",
			Type:    openai.TypeInvalidRequest, Param: "model", Code: codeModelNotAllowed,
		}}
	}
	rt.refusals.WithLabelValues("error").Inc()
	st.log.Debug("routing failed", "err", err)
	return &httpError{500, &openai.Error{Message: "the request could not be routed",
		Type: openai.TypeServer}}
}

// tier is the caller's tier as the router knows it: "" (every model) without a ledger, and
// the default tier for a tier the configuration does not name.
func (st *stream) tier() string {
	if !st.acct.identified {
		return ""
	}
	if _, ok := st.s.cfg.Ledger.Tier(st.acct.principal.Tier); ok {
		return st.acct.principal.Tier
	}
	return st.s.cfg.Ledger.Identity.DefaultTier
}

// promptText returns the request's text for token estimates (joined) and, for chat, its
// messages for the router. Neither is kept beyond the request or logged.
func (st *stream) promptText() (string, []routing.Message) {
	if st.chat == nil {
		if st.embeddings == nil {
			return "", nil
		}
		var b strings.Builder
		for _, v := range gjson.GetBytes(st.embeddings.Raw, "input").Array() {
			if v.Type == gjson.String {
				b.WriteString(v.Str)
				b.WriteByte('\n')
			}
		}
		return b.String(), nil
	}
	var (
		b    strings.Builder
		msgs []routing.Message
	)
	gjson.GetBytes(st.chat.Raw, "messages").ForEach(func(_, m gjson.Result) bool {
		text := messageText(m.Get("content"))
		msgs = append(msgs, routing.Message{Role: m.Get("role").String(), Text: text})
		b.WriteString(text)
		b.WriteByte('\n')
		return true
	})
	return b.String(), msgs
}

// messageText is the text of a message content: a string, or the text parts of an array.
func messageText(c gjson.Result) string {
	if c.Type == gjson.String {
		return c.Str
	}
	var b strings.Builder
	c.ForEach(func(_, part gjson.Result) bool {
		if part.Get("type").Str == "text" {
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(part.Get("text").Str)
		}
		return true
	})
	return b.String()
}
