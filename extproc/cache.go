package extproc

import (
	"context"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/internal/routeheaders"
)

// Response headers of the exact cache.
const (
	// headerCache is "hit" or "miss" on every answer to a cacheable request.
	headerCache = "x-phogate-cache"
	// headerCacheLayer names where a hit came from: "l1" (this replica's memory) or "l2"
	// (Redis, shared by the replicas).
	headerCacheLayer = "x-phogate-cache-layer"
)

// cacheState is the exact cache's part of one stream: set in the request phases, used to
// store the answer in the response phases.
type cacheState struct {
	// Read from the request headers.
	control   string // Cache-Control values, joined with ","
	namespace string // value of the policy's scope header

	// Set by prepareCache for a cacheable request.
	key   cache.Key
	scope string        // the key's scope, which the semantic partition shares
	ttl   time.Duration // how long to store the answer; 0: do not store
	cc    cache.Control

	// flight is set while this request leads the upstream call for identical requests; it
	// must end with Complete or Abandon.
	flight *cache.Flight

	// Response side: the answer is gathered only while collect is set.
	collect bool
	reasm   cache.Reassembler
	broken  bool // a chunk did not reassemble; nothing is stored

	// hit is the stored answer that answered the request, from layer.
	hit   *cache.Entry
	layer cache.Layer
}

// readCacheHeader keeps the request headers the cache needs. It reports whether key was one.
func (st *stream) readCacheHeader(key, value string) bool {
	switch key {
	case "cache-control":
		if st.cache.control != "" {
			st.cache.control += ","
		}
		st.cache.control += value
		return true
	case st.s.cachePolicy.ScopeHeader:
		st.cache.namespace = value
		return true
	}
	return false
}

// lookupCache is the cache step of the request body phase. It answers a chat request from the
// exact cache when it can: from a stored answer, or from the answer of an identical request in
// flight. It returns that immediate response, or nil to send the request upstream; then the
// answer is stored on the way back when the request is cacheable. Cache trouble never fails a
// request; at worst it costs the hit.
//
// The key uses st.model, the served model: a step that changes the model must run before.
func (st *stream) lookupCache(ctx context.Context,
	body []byte) *v3procservicepb.ProcessingResponse {
	if !st.prepareCache(body) {
		return nil
	}
	c := &st.cache
	if c.cc.SkipLookup() {
		// Not served from the cache, so it may not wait for another request either.
		return nil
	}
	if e, layer, ok := st.s.cache.LookupFresh(ctx, c.key, c.cc.LookupMaxAge()); ok {
		if resp := st.replyFromCache(e, layer); resp != nil {
			return resp
		}
	}
	// After an exact miss, a paraphrase of a stored question (semantic.go).
	if resp := st.lookupSemantic(ctx); resp != nil {
		return resp
	}
	if c.ttl <= 0 || c.cc.HasMaxAge {
		// A request whose answer is not stored cannot lead a flight: the others would wait
		// for nothing. One with a max-age could be handed an answer older than it accepts.
		return nil
	}
	return st.joinFlight(ctx)
}

// prepareCache decides whether the request is cacheable and computes its key and TTL.
func (st *stream) prepareCache(body []byte) bool {
	s := st.s
	if s.cache == nil || !s.cachePolicy.Enabled || st.chat == nil || st.model == nil {
		return false
	}
	model := st.model.Name
	// The user is empty without a ledger; a model whose cache scope is "user" is then never
	// cached.
	scope, ok := s.cachePolicy.Scope(model, st.acct.principal.UserID, st.cache.namespace)
	if !ok {
		st.log.Debug("not cached: the cache scope needs a user or namespace", "model", model)
		return false
	}
	key, err := cache.BuildKey(body, model, scope, s.cachePolicy.Key)
	if err != nil || !key.Cacheable() {
		st.log.Debug("not cached", "reason", key.Reason, "err", err)
		return false
	}
	c := &st.cache
	c.key, c.scope = key, scope
	c.cc = cache.ParseCacheControl(c.control)
	c.ttl = c.cc.TTL(s.cachePolicy.TTL(model))
	return true
}

// joinFlight collapses the request with identical ones in flight: the leader goes upstream,
// any other request waits for the leader's answer and is answered with it. A wait that ends
// without an answer sends the request upstream too.
func (st *stream) joinFlight(ctx context.Context) *v3procservicepb.ProcessingResponse {
	fl, err := st.s.cache.Begin(ctx, st.cache.key)
	if err != nil {
		st.log.Debug("joining cache flight", "err", err)
		return nil
	}
	if fl.Leader() {
		st.cache.flight = fl
		return nil
	}
	wctx, cancel := st.extendTimeout(ctx)
	defer cancel()
	e, layer, err := fl.Wait(wctx)
	if err != nil {
		st.log.Debug("no answer from the identical request in flight", "err", err)
		return nil
	}
	return st.replyFromCache(e, layer)
}

// extendTimeout prepares a wait for an identical request in the request body phase, where
// Envoy's message_timeout (1s by default) runs. When the filter allows it (max_message_timeout,
// see [config.Config.MaxMessageTimeout]) it sends one override_message_timeout, which Envoy
// honours once per direction (envoy-notes §1.5), and the cache's collapse wait bounds the wait.
// Otherwise the wait is cut to half the message timeout, so the request still has time to go
// upstream.
func (st *stream) extendTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if d := st.s.maxMessageTimeout; d > 0 && st.send != nil {
		err := st.send(&v3procservicepb.ProcessingResponse{
			OverrideMessageTimeout: durationpb.New(d),
		})
		if err == nil {
			return ctx, func() {}
		}
		st.log.Debug("sending override_message_timeout", "err", err)
	}
	return context.WithTimeout(ctx, st.s.cfg.ExtProc.MessageTimeout.Duration/2)
}

// replyFromCache answers the request with a stored answer: its chat.completion JSON, or for a
// streamed request the same answer as server-sent events. It returns nil when the entry cannot
// be encoded, and the request goes upstream.
//
// An immediate response cannot stream, so a cached stream reaches the client at once, as one
// body with a content-length, however long the answer (envoy-notes §4.1). Envoy's
// StreamedImmediateResponse could stream it, but only with a request body mode of NONE or
// FULL_DUPLEX_STREAMED, and the request body is BUFFERED (envoy-notes §4.2).
func (st *stream) replyFromCache(e *cache.Entry,
	layer cache.Layer) *v3procservicepb.ProcessingResponse {
	body, contentType, err := e.Replay(st.chat.Stream, st.chat.IncludeUsage)
	if err != nil {
		st.log.Debug("replaying cached answer", "err", err)
		return nil
	}
	st.cache.hit, st.cache.layer = e, layer
	st.code = "200"
	st.status = 200
	st.done = true
	st.recordSaved(e)

	set := []*v3corepb.HeaderValueOption{
		setHeader("content-type", contentType),
		setHeader(headerCache, "hit"),
		setHeader(headerCacheLayer, string(layer)),
		setHeader(routeheaders.Model, st.model.Name),
	}
	if st.chat.Stream {
		set = append(set, setHeader("cache-control", "no-cache"))
	}
	if st.requestID != "" {
		set = append(set, setHeader("x-request-id", st.requestID))
	}
	st.log.Debug("answered from cache", "model", st.model.Name, "layer", string(layer),
		"stream", st.chat.Stream, "response_bytes", len(body))
	return &v3procservicepb.ProcessingResponse{
		Response: &v3procservicepb.ProcessingResponse_ImmediateResponse{
			ImmediateResponse: &v3procservicepb.ImmediateResponse{
				Status:  &v3typepb.HttpStatus{Code: v3typepb.StatusCode_OK},
				Headers: &v3procservicepb.HeaderMutation{SetHeaders: set},
				Body:    body,
				Details: "phogate_chat_cache_hit",
			},
		},
	}
}

// recordSaved counts the upstream cost that a hit avoided, at the served model's list price.
func (st *stream) recordSaved(e *cache.Entry) {
	if e.Usage == nil {
		return
	}
	st.s.cache.Metrics().RecordSaved(st.model.Name, answerCost(st.model.Price, e.Usage))
}

// answerCost is the list price of an answer's usage in USD.
func answerCost(p config.Price, u *cache.Usage) float64 {
	return (float64(u.PromptTokens)*p.Input + float64(u.CompletionTokens)*p.Output) / 1e6
}

// prepareStore runs with the response headers of a cacheable request: it marks the answer a
// miss and starts gathering it when it may be stored. A failed answer ends the flight at once,
// so that waiting requests go upstream without waiting for its body.
func (st *stream) prepareStore(hm *v3procservicepb.HeaderMutation, endOfStream bool) {
	c := &st.cache
	if !c.key.Cacheable() || c.hit != nil {
		return
	}
	hm.SetHeaders = append(hm.SetHeaders, setHeader(headerCache, "miss"))
	if c.ttl > 0 && st.status == 200 && !endOfStream {
		c.collect = true
		return
	}
	st.abandonFlight()
}

// collectEvent feeds one SSE event's data to the reassembler; the SSE framing is parsed once,
// by the stream's parser.
func (st *stream) collectEvent(data []byte) {
	c := &st.cache
	if !c.collect || c.broken {
		return
	}
	if err := c.reasm.Add(data); err != nil {
		c.broken = true
		st.log.Debug("answer not stored: reassembling stream", "err", err)
	}
}

// storeAnswer stores the whole answer once its last body message arrived: body is the
// buffered JSON answer, unused for a stream. It is called before the last message is answered,
// so a client that got the answer finds it in the cache. Only a complete, successful answer
// is stored ([cache.Storable]); anything else ends the flight without an answer.
func (st *stream) storeAnswer(ctx context.Context, body []byte) {
	c := &st.cache
	if !c.collect {
		return
	}
	c.collect = false
	e, why := st.answerEntry(body)
	if e == nil {
		st.log.Debug("answer not stored", "reason", why)
		st.abandonFlight()
		return
	}
	var err error
	if c.flight != nil {
		err = c.flight.Complete(ctx, e, c.ttl)
		c.flight = nil
	} else {
		err = st.s.cache.Store(ctx, c.key, e, c.ttl)
	}
	if err != nil {
		st.log.Debug("storing answer", "err", err)
		return
	}
	st.log.Debug("answer stored", "ttl", c.ttl)
	st.storeSemantic(ctx)
}

// answerEntry builds the entry of the answer, or returns why it cannot be stored.
func (st *stream) answerEntry(body []byte) (*cache.Entry, string) {
	var (
		e        *cache.Entry
		err      error
		complete = true
	)
	if st.mode == respSSE {
		// An event dropped by the parser for its size is missing from the answer.
		complete = st.cache.reasm.Done() && !st.cache.broken && st.sse.Dropped == 0
		e, err = st.cache.reasm.Result()
	} else {
		e, err = cache.EntryFromJSON(body)
	}
	if err != nil {
		return nil, err.Error()
	}
	if ok, why := cache.Storable(st.status, e, complete, false); !ok {
		return nil, why
	}
	return e, ""
}

// abandonFlight ends the flight this request leads without an answer, if any: identical
// requests waiting for it go upstream themselves. A client that went away ends its ext_proc
// stream before the last body message, so its flight ends here, from finish, and its answer,
// which may have been cut short, is never stored.
func (st *stream) abandonFlight() {
	st.cache.collect = false
	if st.cache.flight != nil {
		st.cache.flight.Abandon()
		st.cache.flight = nil
	}
}

// cacheResult is the cache outcome for the request's log line: "hit", "miss" or "".
func (st *stream) cacheResult() string {
	switch {
	case st.cache.hit != nil:
		return "hit"
	case st.cache.key.Cacheable():
		return "miss"
	}
	return ""
}
