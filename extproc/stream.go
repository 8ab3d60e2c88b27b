package extproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3procfilterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/internal/openai"
	"github.com/phochat/phogate/internal/routeheaders"
)

// Routes, as metric label values.
const (
	routeChat       = "chat"
	routeEmbeddings = "embeddings"
	routeModels     = "models"
	routeOther      = "other"
	routeNone       = "none" // no request headers seen
)

// Code label values that are not HTTP statuses.
const (
	codePassthrough = "passthrough"
	codeAborted     = "aborted"
)

// unknownModel is the model label for a request without a configured model.
const unknownModel = "unknown"

// attributesKey is the key under which Envoy sends attributes, whatever the filter's name
// (envoy-notes §1.2).
const attributesKey = "envoy.filters.http.ext_proc"

// tailBytes is how much of a large JSON answer is kept to find its usage at the end.
const tailBytes = 16 << 10

// responseMode says how the response body reaches the server.
type responseMode int

const (
	respBuffered responseMode = iota // the filter's BUFFERED: one message, whole body
	respSSE                          // STREAMED text/event-stream
	respTail                         // STREAMED JSON: keep a bounded tail
)

// stream is the state of one ext_proc stream, that is one HTTP request. It is used by one
// goroutine.
type stream struct {
	s     *Server
	log   *slog.Logger
	start time.Time
	done  bool // nothing more is expected; end the stream

	// Request.
	requestID     string
	route         string
	method, path  string
	contentType   string
	contentLength bool
	model         *config.Model
	provider      *config.Provider // the provider that answered, from the response attributes
	requestBytes  int
	chat          *openai.ChatRequest
	embeddings    *openai.EmbeddingsRequest

	// Response.
	code          string // final code label when not the upstream status
	status        int
	respType      string
	upstreamAddr  string
	cluster       string
	mode          responseMode
	sse           openai.SSEParser
	sawDone       bool // the stream's [DONE] event arrived
	tail          []byte
	responseBytes int
	usage         openai.Usage
	hasUsage      bool
	finished      bool

	// Timings for the balancer's observation (observer.go).
	routedAt, headersAt, firstChunkAt time.Time

	// cache is the exact cache's state for this request (cache.go).
	cache cacheState
	// sem is the semantic cache's state for this request (semantic.go).
	sem semanticState
	// acct is the ledger's and router's state for this request (ledger.go, route.go).
	acct accountState
	// send sends a reply ahead of the one handle returns (an override_message_timeout);
	// nil when the stream is driven without a gRPC stream.
	send func(*v3procservicepb.ProcessingResponse) error
}

func (s *Server) newStream() *stream {
	return &stream{s: s, log: s.log.With("request_id", ""), start: s.now(), route: routeNone}
}

// handle answers one message. An error means the message cannot belong to any valid stream.
// ctx is the stream's context: it bounds the I/O (cache, Redis) done for the message.
func (st *stream) handle(ctx context.Context,
	req *v3procservicepb.ProcessingRequest) (*v3procservicepb.ProcessingResponse, error) {
	switch r := req.GetRequest().(type) {
	case *v3procservicepb.ProcessingRequest_RequestHeaders:
		return st.onRequestHeaders(ctx, r.RequestHeaders), nil
	case *v3procservicepb.ProcessingRequest_RequestBody:
		return st.onRequestBody(ctx, r.RequestBody), nil
	case *v3procservicepb.ProcessingRequest_ResponseHeaders:
		return st.onResponseHeaders(req, r.ResponseHeaders), nil
	case *v3procservicepb.ProcessingRequest_ResponseBody:
		return st.onResponseBody(ctx, r.ResponseBody), nil
	case *v3procservicepb.ProcessingRequest_RequestTrailers:
		return emptyTrailers(false), nil
	case *v3procservicepb.ProcessingRequest_ResponseTrailers:
		return emptyTrailers(true), nil
	}
	return nil, fmt.Errorf("unexpected ext_proc message %s", processingRequestKind(req))
}

// outOfOrder counts a message that Envoy, as configured, should not send at this point. The
// caller passes it through untouched rather than failing a client's request.
func (st *stream) outOfOrder(what string) {
	st.s.metrics.streamErrors.WithLabelValues(reasonOutOfOrder).Inc()
	st.log.Debug("unexpected ext_proc message", "message", what, "route", st.route)
}

// Phase 1: request headers. Decide the route; answer /v1/models and errors directly.
func (st *stream) onRequestHeaders(ctx context.Context,
	h *v3procservicepb.HttpHeaders) *v3procservicepb.ProcessingResponse {
	if st.route != routeNone {
		st.outOfOrder("request_headers")
		return continueRequestHeaders(nil)
	}
	st.readRequestHeaders(h)

	path, _, _ := strings.Cut(st.path, "?")
	switch path {
	case "/v1/models":
		st.route = routeModels
		if resp := st.identify(ctx, h); resp != nil {
			return resp
		}
		if st.method != "GET" {
			return st.fail(methodNotAllowed(st.method, path))
		}
		return st.reply(200, st.s.modelsBody)
	case "/v1/chat/completions":
		st.route = routeChat
	case "/v1/embeddings":
		st.route = routeEmbeddings
	default:
		st.route = routeOther
		return st.passthrough()
	}
	// Identify the caller (ledger.go) and read the routing hint (route.go).
	if resp := st.identify(ctx, h); resp != nil {
		return resp
	}
	if resp := st.readPrefer(h); resp != nil {
		return resp
	}

	if st.method != "POST" {
		return st.fail(methodNotAllowed(st.method, path))
	}
	if h.GetEndOfStream() {
		return st.fail(badRequest("", "the request body is required"))
	}
	return continueRequestHeaders(nil)
}

func (st *stream) readRequestHeaders(h *v3procservicepb.HttpHeaders) {
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch hv.GetKey() {
		case ":method":
			st.method = headerValue(hv.GetRawValue(), hv.GetValue())
		case ":path":
			st.path = headerValue(hv.GetRawValue(), hv.GetValue())
		case "x-request-id":
			st.requestID = headerValue(hv.GetRawValue(), hv.GetValue())
		case "content-type":
			st.contentType = headerValue(hv.GetRawValue(), hv.GetValue())
		case "content-length":
			st.contentLength = true
		default:
			st.readCacheHeader(hv.GetKey(), headerValue(hv.GetRawValue(), hv.GetValue()))
		}
	}
	if st.requestID != "" {
		st.log = st.s.log.With("request_id", st.requestID)
	}
}

// headerValue reads a header value from raw_value, where Envoy puts it, or from value.
func headerValue(raw []byte, value string) string {
	if len(raw) > 0 {
		return string(raw)
	}
	return value
}

// passthrough lets a request phogate does not handle go through untouched: both body modes
// become NONE and response headers are skipped, so Envoy sends nothing more. Routing headers
// a client may have sent are removed, with the route cache cleared, so that a client cannot
// pick a provider cluster itself.
func (st *stream) passthrough() *v3procservicepb.ProcessingResponse {
	st.code = codePassthrough
	st.done = true
	resp := continueRequestHeaders(&v3procservicepb.CommonResponse{
		HeaderMutation: &v3procservicepb.HeaderMutation{
			RemoveHeaders: []string{routeheaders.Provider, routeheaders.Model},
		},
		ClearRouteCache: true,
	})
	resp.ModeOverride = &v3procfilterpb.ProcessingMode{
		ResponseHeaderMode: v3procfilterpb.ProcessingMode_SKIP,
		RequestBodyMode:    v3procfilterpb.ProcessingMode_NONE,
		ResponseBodyMode:   v3procfilterpb.ProcessingMode_NONE,
	}
	return resp
}

// Phase 2: request body. Validate, answer from the cache when possible, pick the provider and
// tell Envoy where to send it. Each step may end the request with an immediate response.
func (st *stream) onRequestBody(ctx context.Context,
	b *v3procservicepb.HttpBody) *v3procservicepb.ProcessingResponse {
	if st.route != routeChat && st.route != routeEmbeddings || st.model != nil {
		st.outOfOrder("request_body")
		return continueRequestBody(nil)
	}
	body := b.GetBody()
	st.requestBytes = len(body)
	if len(body) > st.s.cfg.ExtProc.MaxBodyBytes {
		return st.fail(&httpError{413, &openai.Error{
			Message: fmt.Sprintf("the request body is larger than %d bytes",
				st.s.cfg.ExtProc.MaxBodyBytes),
			Type: openai.TypeInvalidRequest,
			Code: openai.CodeRequestTooLarge,
		}})
	}

	// Step 1: parse the body and find the requested model.
	name, herr := st.parseBody(body)
	if herr != nil {
		return st.fail(herr)
	}
	if herr := st.resolveRequested(name); herr != nil {
		return st.fail(herr)
	}

	// Step 2: route the model and admit the request: rate limits, then the budget
	// reservation (route.go, ledger.go). They set st.model, the served model, before the
	// cache step, since the cache key depends on it.
	if resp := st.routeAndAdmit(ctx); resp != nil {
		return resp
	}

	// Step 3: answer from the exact cache, or from an identical request in flight.
	if resp := st.lookupCache(ctx, body); resp != nil {
		return resp
	}

	// Step 4: reply with the route and the rewritten body. Envoy picks the provider; the
	// upstream filter makes that provider's rewrites on every attempt (upstream.go).
	newBody, err := st.rewriteBody(body)
	if err != nil {
		// The body parsed, so a rewrite cannot fail; keep the client's request working.
		st.log.Warn("rewriting request body", "err", err)
		newBody = nil
	}
	st.logRouted()
	st.routedAt = st.s.now()
	return continueRequestBody(st.routeMutation(newBody))
}

// parseBody parses the body for the route and returns the requested model.
func (st *stream) parseBody(body []byte) (string, *httpError) {
	var err error
	switch st.route {
	case routeChat:
		st.chat, err = openai.ParseChatRequest(body)
		if err == nil {
			return st.chat.Model, nil
		}
	default:
		st.embeddings, err = openai.ParseEmbeddingsRequest(body)
		if err == nil {
			return st.embeddings.Model, nil
		}
	}
	var oe *openai.Error
	if !errors.As(err, &oe) {
		oe = &openai.Error{Message: "invalid request body", Type: openai.TypeInvalidRequest}
	}
	return "", &httpError{400, oe}
}

// resolveModel finds the requested model and checks that it serves the route.
func (st *stream) resolveModel(name string) *httpError {
	m, ok := st.s.cfg.Model(name)
	if !ok {
		return &httpError{404, &openai.Error{
			Message: fmt.Sprintf("the model %q does not exist", truncate(name, 200)),
			Type:    openai.TypeInvalidRequest,
			Param:   "model",
			Code:    openai.CodeModelNotFound,
		}}
	}
	want := config.KindChat
	if st.route == routeEmbeddings {
		want = config.KindEmbedding
	}
	if m.Kind != want {
		return &httpError{400, &openai.Error{
			Message: fmt.Sprintf("the model %q is a %s model and cannot serve %s", m.Name, m.Kind,
				st.endpoint()),
			Type:  openai.TypeInvalidRequest,
			Param: "model",
			Code:  openai.CodeModelNotSupported,
		}}
	}
	st.model = m
	return nil
}

func (st *stream) endpoint() string {
	if st.route == routeEmbeddings {
		return "/v1/embeddings"
	}
	return "/v1/chat/completions"
}

// rewriteBody returns the body to send upstream, or nil when it is unchanged. It names the
// served model, which routing may have chosen in place of the requested one, and, for
// streamed chat, asks for a final usage chunk so that tokens can be counted. The client then
// also receives that chunk (choices empty), which is the documented OpenAI stream format.
// A provider's own name for the model is set per attempt (upstream.go).
func (st *stream) rewriteBody(body []byte) ([]byte, error) {
	var out []byte
	var err error
	if st.model.Name != st.acct.requested {
		if out, err = openai.SetModel(body, st.model.Name); err != nil {
			return nil, err
		}
	}
	if st.chat != nil && st.chat.Stream && !st.chat.IncludeUsage {
		if out == nil {
			out = body
		}
		if out, err = openai.SetIncludeUsage(out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// routeMutation builds the reply that routes the request: the model header, the client's
// credential, routing headers and trusted user header removed, and the new body with a matching content-length.
// clear_route_cache works only together with a header mutation in the same reply
// (envoy-notes §1.7).
func (st *stream) routeMutation(newBody []byte) *v3procservicepb.CommonResponse {
	hm := &v3procservicepb.HeaderMutation{
		SetHeaders:    []*v3corepb.HeaderValueOption{setHeader(routeheaders.Model, st.model.Name)},
		RemoveHeaders: []string{"authorization", routeheaders.Provider},
	}
	if id := st.s.cfg.Ledger.Identity; id.Mode == config.IdentityTrustedHeader {
		// The user id is the operator's business, not the provider's.
		hm.RemoveHeaders = append(hm.RemoveHeaders, strings.ToLower(id.Header))
	}
	cr := &v3procservicepb.CommonResponse{HeaderMutation: hm, ClearRouteCache: true}
	if newBody != nil {
		// A content-length that no longer matches the body makes Envoy answer 500.
		if st.contentLength {
			hm.SetHeaders = append(hm.SetHeaders, setHeader("content-length", strconv.Itoa(len(newBody))))
		}
		cr.BodyMutation = &v3procservicepb.BodyMutation{
			Mutation: &v3procservicepb.BodyMutation_Body{Body: newBody},
		}
	}
	return cr
}

func (st *stream) logRouted() {
	if !st.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	var req slog.Attr
	if st.chat != nil {
		req = slog.Any("request", st.chat)
	} else {
		req = slog.Any("request", st.embeddings)
	}
	st.log.LogAttrs(context.Background(), slog.LevelDebug, "request routed",
		slog.String("route", st.route), req, slog.String("model", st.model.Name))
}

// Phase 3: response headers. Record the answer and choose how its body is read.
func (st *stream) onResponseHeaders(req *v3procservicepb.ProcessingRequest,
	h *v3procservicepb.HttpHeaders) *v3procservicepb.ProcessingResponse {
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch hv.GetKey() {
		case ":status":
			st.status, _ = strconv.Atoi(headerValue(hv.GetRawValue(), hv.GetValue()))
		case "content-type":
			st.respType = headerValue(hv.GetRawValue(), hv.GetValue())
		}
	}
	st.readAttributes(req)
	st.headersAt = st.s.now()

	hm := &v3procservicepb.HeaderMutation{}
	if st.model != nil {
		hm.SetHeaders = append(hm.SetHeaders, setHeader(routeheaders.Model, st.model.Name))
	}
	if st.requestID != "" {
		hm.SetHeaders = append(hm.SetHeaders, setHeader("x-request-id", st.requestID))
	}
	st.prepareStore(hm, h.GetEndOfStream())
	resp := continueResponseHeaders(&v3procservicepb.CommonResponse{HeaderMutation: hm})
	if h.GetEndOfStream() {
		st.done = true
		return resp
	}

	// Server-sent events must never be buffered: switch to STREAMED and answer each chunk
	// (envoy-notes §1.8, §4). Embedding lists can be megabytes, over Envoy's buffer limit
	// (BUFFERED would answer 500), so they are streamed too and only their tail is kept.
	media, _, _ := strings.Cut(st.respType, ";")
	switch {
	case strings.EqualFold(strings.TrimSpace(media), "text/event-stream"):
		st.mode = respSSE
	case st.route == routeEmbeddings:
		st.mode = respTail
	default:
		return resp
	}
	resp.ModeOverride = bodyModes(v3procfilterpb.ProcessingMode_BUFFERED,
		v3procfilterpb.ProcessingMode_STREAMED)
	return resp
}

// readAttributes reads the configured response attributes, sent on the first response
// message (envoy-notes §1.2, §2.3).
func (st *stream) readAttributes(req *v3procservicepb.ProcessingRequest) {
	attrs := req.GetAttributes()[attributesKey]
	if attrs == nil {
		return
	}
	f := attrs.GetFields()
	st.upstreamAddr = f["upstream.address"].GetStringValue()
	st.cluster = f["xds.cluster_name"].GetStringValue()
	if p, ok := st.s.cfg.Provider(f[routeheaders.ProviderAttribute].GetStringValue()); ok {
		st.provider = p
	}
}

// Phase 4: response body. Take usage from the answer and store it in the cache; never change
// it.
func (st *stream) onResponseBody(ctx context.Context,
	b *v3procservicepb.HttpBody) *v3procservicepb.ProcessingResponse {
	body := b.GetBody()
	if st.firstChunkAt.IsZero() {
		st.firstChunkAt = st.s.now()
	}
	st.responseBytes += len(body)
	switch st.mode {
	case respSSE:
		st.sse.Feed(body, st.onEvent)
	case respTail:
		st.keepTail(body)
		if b.GetEndOfStream() {
			st.usage, st.hasUsage = openai.UsageFromTail(st.tail)
		}
	default:
		if st.status >= 200 && st.status < 300 {
			st.usage, st.hasUsage = openai.UsageFromJSON(body)
			st.noteAnswer(body, false)
		}
	}
	// A BUFFERED body is whole in its one message, even when trailers follow (eos false).
	// A stream is whole at its [DONE] event: a client may hang up as soon as it reads it,
	// before the end of the stream reaches the server.
	if b.GetEndOfStream() || st.mode == respBuffered || st.sawDone {
		st.storeAnswer(ctx, body)
	}
	if b.GetEndOfStream() {
		st.done = true
	}
	return emptyResponseBody()
}

var doneData = []byte("[DONE]")

func (st *stream) onEvent(e openai.Event) {
	st.collectEvent(e.Data)
	if string(e.Data) == string(doneData) {
		st.sawDone = true
		return
	}
	st.noteAnswer(e.Data, true)
	if u, ok := openai.UsageFromChunk(e.Data); ok {
		st.usage, st.hasUsage = u, true
	}
}

// keepTail keeps the last tailBytes of the body.
func (st *stream) keepTail(b []byte) {
	if len(b) >= tailBytes {
		st.tail = append(st.tail[:0], b[len(b)-tailBytes:]...)
		return
	}
	st.tail = append(st.tail, b...)
	if over := len(st.tail) - tailBytes; over > 0 {
		st.tail = st.tail[:copy(st.tail, st.tail[over:])]
	}
}

// fail answers the client with an OpenAI error.
func (st *stream) fail(e *httpError) *v3procservicepb.ProcessingResponse {
	st.log.Debug("request rejected", "route", st.route, "status", e.status, "type", e.err.Type,
		"param", e.err.Param, "code", e.err.Code)
	return st.reply(e.status, e.err.Body())
}

// reply answers the client directly and ends the stream.
func (st *stream) reply(code int, body []byte) *v3procservicepb.ProcessingResponse {
	st.code = strconv.Itoa(code)
	st.status = code
	st.done = true
	return immediate(code, body, st.requestID, "phogate_"+st.route+"_"+st.code)
}

// Phase 5: end. Release the cache flight, record metrics and one Debug line, once.
func (st *stream) finish() {
	st.abandonFlight()
	if st.finished || st.route == routeNone {
		return
	}
	st.finished = true
	model := unknownModel
	if st.model != nil {
		model = st.model.Name
	}
	code := st.code
	switch {
	case code != "":
	case st.status >= 100 && st.status <= 599:
		code = strconv.Itoa(st.status)
	default:
		code = codeAborted
	}
	m := st.s.metrics
	elapsed := st.s.now().Sub(st.start)
	m.requests.WithLabelValues(st.route, model, code).Inc()
	m.requestDuration.WithLabelValues(st.route, model).Observe(elapsed.Seconds())
	st.settle(elapsed) // the reservation and the usage row (ledger.go)
	if st.hasUsage {
		m.tokens.WithLabelValues(model, "input").Add(float64(st.usage.PromptTokens))
		m.tokens.WithLabelValues(model, "output").Add(float64(st.usage.CompletionTokens))
	}
	st.logDone(model, code, elapsed)
	st.observe()
}

func (st *stream) logDone(model, code string, elapsed time.Duration) {
	ctx := context.Background()
	if !st.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	provider := ""
	if st.provider != nil {
		provider = st.provider.Name
	}
	attrs := []slog.Attr{
		slog.String("route", st.route), slog.String("model", model),
		slog.String("provider", provider), slog.String("code", code),
		slog.Int("request_bytes", st.requestBytes), slog.Int("response_bytes", st.responseBytes),
		slog.Duration("duration", elapsed),
		slog.String("upstream_address", st.upstreamAddr), slog.String("cluster", st.cluster),
	}
	if st.hasUsage {
		attrs = append(attrs, slog.Any("usage", st.usage))
	}
	if st.sse.Dropped > 0 {
		attrs = append(attrs, slog.Int("sse_events_dropped", st.sse.Dropped))
	}
	if r := st.cacheResult(); r != "" {
		attrs = append(attrs, slog.String("cache", r))
	}
	st.log.LogAttrs(ctx, slog.LevelDebug, "request done", attrs...)
}

func methodNotAllowed(method, path string) *httpError {
	return &httpError{405, &openai.Error{
		Message: fmt.Sprintf("method %s is not allowed on %s", truncate(method, 20), path),
		Type:    openai.TypeInvalidRequest,
		Code:    openai.CodeMethodNotAllowed,
	}}
}

func badRequest(param, msg string) *httpError {
	return &httpError{400, &openai.Error{Message: msg, Type: openai.TypeInvalidRequest, Param: param}}
}

// truncate shortens client-supplied text quoted in an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
