package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"

	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/cache/semantic"
)

// Response headers of a semantic hit, besides x-phogate-cache: hit.
const (
	// layerSemantic is the value of x-phogate-cache-layer on a semantic hit.
	layerSemantic = "semantic"
	// headerCacheSimilarity is the cosine similarity of the question and the cached one,
	// with three decimals, rounded down (so it never shows more than was measured).
	headerCacheSimilarity = "x-phogate-cache-similarity"
	// headerCacheEntry is the id of the semantic entry that answered.
	headerCacheEntry = "x-phogate-cache-entry"
)

// semanticQueryPlaceholder replaces the last user message's content in the request from
// which the partition is computed: everything but that text must match exactly.
const semanticQueryPlaceholder = "\x00phogate semantic query\x00"

// SemanticOptions is the semantic cache's part of [Options].
type SemanticOptions struct {
	// Index finds earlier questions that mean the same. Its answers live in the exact
	// cache ([Options.Cache]), which must be set too. The server does not close it.
	Index *semantic.Index
	// Metrics, when set, counts embedding failures of lookups as
	// phogate_semantic_lookups_total{result="error"}; pass the index's metrics.
	Metrics *semantic.Metrics
	// Threshold returns the similarity a hit needs for a served model; nil uses the
	// index's configured threshold.
	Threshold func(model string) float64
}

// semanticState is the semantic cache's part of one stream.
type semanticState struct {
	prepared  bool
	ok        bool      // the request may use the semantic cache
	partition string    // exact-cache key of the request without the last user text
	text      string    // the last user message's text
	vec       []float32 // its embedding, computed once, at lookup or store
	hit       *semantic.Match
}

// lookupSemantic runs after an exact miss: it embeds the last user message and looks for an
// earlier question with the same partition that means the same. On a hit whose answer is
// still in the exact cache it answers like an exact hit, with the semantic headers. It
// returns nil to go on; any trouble is a miss.
func (st *stream) lookupSemantic(ctx context.Context) *v3procservicepb.ProcessingResponse {
	sem := &st.s.semantic
	if sem.Index == nil || !st.prepareSemantic() || !st.embedSemantic(ctx) {
		return nil
	}
	s := &st.sem
	threshold := 0.0
	if sem.Threshold != nil {
		threshold = sem.Threshold(st.model.Name)
	}
	m, ok, reason := sem.Index.LookupVector(s.partition, s.text, s.vec, threshold)
	if !ok {
		st.log.Debug("semantic cache miss", "reason", string(reason),
			"similarity", m.Similarity, "guard", string(m.Guard))
		return nil
	}
	e, layer, ok := st.s.cache.LookupFresh(ctx, cache.Key{ID: m.AnswerKey},
		st.cache.cc.LookupMaxAge())
	if !ok {
		st.log.Debug("semantic cache miss: the answer is no longer in the exact cache",
			"entry", m.EntryID)
		return nil
	}
	resp := st.replyFromCache(e, layer)
	if resp == nil {
		return nil
	}
	s.hit = &m
	set := resp.GetImmediateResponse().GetHeaders().GetSetHeaders()
	for _, h := range set {
		if h.GetHeader().GetKey() == headerCacheLayer {
			h.Header.RawValue = []byte(layerSemantic)
		}
	}
	sim := math.Floor(m.Similarity*1000) / 1000
	resp.GetImmediateResponse().Headers.SetHeaders = append(set,
		setHeader(headerCacheSimilarity, strconv.FormatFloat(sim, 'f', 3, 64)),
		setHeader(headerCacheEntry, m.EntryID))
	resp.GetImmediateResponse().Details = "phogate_chat_semantic_cache_hit"
	st.log.Debug("answered from semantic cache", "entry", m.EntryID,
		"similarity", m.Similarity, "exact_layer", string(layer))
	return resp
}

// prepareSemantic computes the partition and the text of a cacheable request once, and
// reports whether the request may use the semantic cache.
func (st *stream) prepareSemantic() bool {
	s := &st.sem
	if s.prepared {
		return s.ok
	}
	s.prepared = true
	if st.chat == nil || !st.cache.key.Cacheable() {
		return false
	}
	masked, text, err := maskLastUserText(st.chat.Raw)
	if err != nil {
		st.log.Debug("not in the semantic cache", "reason", err)
		return false
	}
	key, err := cache.BuildKey(masked, st.model.Name, st.cache.scope, st.s.cachePolicy.Key)
	if err != nil || !key.Cacheable() {
		st.log.Debug("not in the semantic cache", "reason", key.Reason, "err", err)
		return false
	}
	s.partition, s.text, s.ok = key.ID, text, true
	return true
}

// embedSemantic embeds the text once. A failure is a miss: it is logged and counted.
func (st *stream) embedSemantic(ctx context.Context) bool {
	s := &st.sem
	if s.vec != nil {
		return true
	}
	vec, err := st.s.semantic.Index.Embed(ctx, s.text)
	if err != nil {
		st.log.Debug("semantic cache: embedding failed", "err", err)
		if m := st.s.semantic.Metrics; m != nil {
			m.Lookups.WithLabelValues(string(semantic.ReasonError)).Inc()
		}
		return false
	}
	s.vec = vec
	return true
}

// storeSemantic adds the question of an answer the exact cache just stored, under the
// answer's exact key. It reuses the lookup's vector; a request that skipped the lookup
// (Cache-Control: no-cache) is embedded now.
func (st *stream) storeSemantic(ctx context.Context) {
	if st.s.semantic.Index == nil || !st.prepareSemantic() || !st.embedSemantic(ctx) {
		return
	}
	s := &st.sem
	e, err := st.s.semantic.Index.AddVector(ctx, s.partition, s.text, st.cache.key.ID, s.vec)
	if err != nil {
		// The entry is searchable here even when sharing it through Redis failed.
		st.log.Debug("semantic cache: adding entry", "err", err)
		return
	}
	st.log.Debug("semantic cache: entry added", "entry", e.ID)
}

// errNoUserText says a request's last message is not a user message with text only.
var errNoUserText = errors.New("the last message is not a user message with text only")

// maskLastUserText returns the chat request body with the last message's content replaced
// by [semanticQueryPlaceholder], and that content's text. The last message must be a user
// message whose content is a string or a list of text parts (joined with newlines); an
// image or audio part shapes the answer in a way the text does not show, so such a request
// is not eligible.
func maskLastUserText(body []byte) ([]byte, string, error) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, "", err
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal(req["messages"], &msgs); err != nil || len(msgs) == 0 {
		return nil, "", errNoUserText
	}
	var last map[string]json.RawMessage
	if err := json.Unmarshal(msgs[len(msgs)-1], &last); err != nil {
		return nil, "", errNoUserText
	}
	var role string
	if err := json.Unmarshal(last["role"], &role); err != nil || role != "user" {
		return nil, "", errNoUserText
	}
	text, ok := contentText(last["content"])
	if !ok || strings.TrimSpace(text) == "" {
		return nil, "", errNoUserText
	}
	var err error
	if last["content"], err = json.Marshal(semanticQueryPlaceholder); err != nil {
		return nil, "", err
	}
	if msgs[len(msgs)-1], err = json.Marshal(last); err != nil {
		return nil, "", err
	}
	if req["messages"], err = json.Marshal(msgs); err != nil {
		return nil, "", err
	}
	out, err := json.Marshal(req)
	return out, text, err
}

// contentText reads a message content made of text only.
func contentText(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		return s, json.Unmarshal(raw, &s) == nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) == 0 {
		return "", false
	}
	texts := make([]string, 0, len(parts))
	for _, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", false
		}
		texts = append(texts, *p.Text)
	}
	return strings.Join(texts, "\n"), true
}
