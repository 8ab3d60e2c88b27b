package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// KeyVersion is the version of the key format. It is part of every key ID, so changing how keys
// are built (the ignored fields, the normalisation, the hash) only needs a new version: old
// entries are then never found and expire by themselves.
const KeyVersion = 1

// keyDomain separates exact-cache hashes from any other SHA-256 the gateway computes.
var keyDomain = []byte("phogate exact cache key v" + strconv.Itoa(KeyVersion) + "\n")

// IgnoredFields are the top-level request fields that do not shape the answer, and so are left
// out of the key. This is the one list of them. Every other field, including fields this code
// does not know, is part of the key: a new sampling parameter can then only cost hits, never
// serve a wrong answer.
//
//   - model: replaced by the served model passed to [BuildKey], so aliases that route to one
//     model share entries and one alias routed to two models does not;
//   - stream, stream_options: how the answer is delivered; a stored answer is replayed either
//     way (see [Entry.SSE]);
//   - user, safety_identifier, metadata: labels for the provider's abuse tracking and logs;
//   - store: whether the provider keeps the completion for its dashboard;
//   - prompt_cache_key, prompt_cache_retention: hints for the provider's own prompt cache;
//   - service_tier: the provider's latency class, not the content.
var IgnoredFields = []string{
	"model",
	"stream",
	"stream_options",
	"user",
	"safety_identifier",
	"metadata",
	"store",
	"prompt_cache_key",
	"prompt_cache_retention",
	"service_tier",
}

var ignored = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range IgnoredFields {
		m[f] = true
	}
	return m
}()

// KeyOptions are the settings that change how keys are built.
type KeyOptions struct {
	// CaseFold lower-cases message text before hashing, so "Hello" and "hello" share an entry.
	CaseFold bool
	// Uncacheable names top-level request parameters whose presence (with any value other than
	// null) makes a request uncacheable.
	Uncacheable []string
}

// Key identifies one cache entry. The zero value is an uncacheable key.
type Key struct {
	// ID is "x<version>:" followed by the hex SHA-256 of the key material: the served model,
	// the scope and the canonical request (see [BuildKey]). Empty when the request is not
	// cacheable. The ID is safe to use in Redis keys but is never a metric label or log value.
	ID string
	// Reason says why the request is not cacheable; empty when it is.
	Reason string
}

// Cacheable reports whether the request may be looked up and stored.
func (k Key) Cacheable() bool { return k.ID != "" }

// String returns the ID, or "uncacheable (<reason>)".
func (k Key) String() string {
	if k.Cacheable() {
		return k.ID
	}
	return "uncacheable (" + k.Reason + ")"
}

// BuildKey computes the exact-cache key of a chat completion request body req, as answered by
// the served model in scope (for example "global", see [Policy.Scope]).
//
// The key material is the canonical JSON of the request: object keys sorted, numbers in one
// spelling (1, 1.0 and 1e0 are the same), [IgnoredFields] removed, and the text of every
// message (string content and "text" parts; see [NormalizeText]) normalised. Other content
// parts, such as images and audio, are hashed verbatim. Message order, roles, tool calls and
// tool results all count.
//
// A request with n > 1, or with one of opts.Uncacheable, gives an uncacheable key (with a
// Reason) and no error. Bad input (not a JSON object, an empty model) is an error.
func BuildKey(req []byte, model, scope string, opts KeyOptions) (Key, error) {
	if model == "" {
		return Key{}, errors.New("building cache key: empty model")
	}
	body, err := decodeObject(req)
	if err != nil {
		return Key{}, fmt.Errorf("building cache key: %w", err)
	}
	if reason := uncacheableReason(body, opts.Uncacheable); reason != "" {
		return Key{Reason: reason}, nil
	}

	for f := range ignored {
		delete(body, f)
	}
	normalizeMessages(body, opts.CaseFold)
	if p, ok := body["prompt"].(string); ok {
		body["prompt"] = NormalizeText(p, opts.CaseFold)
	}
	canonicalNumbers(body)

	h := sha256.New()
	h.Write(keyDomain)
	writeField(h, model)
	writeField(h, scope)
	enc := json.NewEncoder(h)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		return Key{}, fmt.Errorf("building cache key: %w", err)
	}
	var sum [sha256.Size]byte
	return Key{ID: "x" + strconv.Itoa(KeyVersion) + ":" + hex.EncodeToString(h.Sum(sum[:0]))}, nil
}

// writeField writes s with its length, so that no two (model, scope) pairs write the same bytes.
func writeField(w io.Writer, s string) {
	var n [8]byte
	w.Write(strconv.AppendInt(n[:0], int64(len(s)), 10))
	io.WriteString(w, ":"+s+"\n")
}

// decodeObject parses a JSON object, keeping numbers as written.
func decodeObject(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("request body is not valid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("request body has data after the JSON object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("request body is not a JSON object")
	}
	return m, nil
}

// uncacheableReason returns why a request must not be cached, or "".
func uncacheableReason(body map[string]any, params []string) string {
	if v, ok := body["n"]; ok && v != nil {
		num, isNum := v.(json.Number)
		f, err := num.Float64()
		if !isNum || err != nil {
			return "n is not a number"
		}
		if f > 1 {
			return "n > 1 asks for several answers"
		}
	}
	for _, p := range params {
		if v, ok := body[p]; ok && v != nil {
			return "parameter " + strconv.Quote(p) + " is uncacheable"
		}
	}
	return ""
}

// normalizeMessages normalises the text of every message: string content and "text" parts.
// Anything that does not have the expected shape is left as it is, and so hashed verbatim.
func normalizeMessages(body map[string]any, caseFold bool) {
	msgs, _ := body["messages"].([]any)
	for _, m := range msgs {
		msg, ok := m.(map[string]any)
		if !ok {
			continue
		}
		switch c := msg["content"].(type) {
		case string:
			msg["content"] = NormalizeText(c, caseFold)
		case []any:
			for _, p := range c {
				part, ok := p.(map[string]any)
				if !ok || part["type"] != "text" {
					continue
				}
				if t, ok := part["text"].(string); ok {
					part["text"] = NormalizeText(t, caseFold)
				}
			}
		}
	}
}

// canonicalNumbers rewrites every number in v in one spelling: an integer when the value is
// one that an int64 holds exactly, otherwise the shortest float64 form.
func canonicalNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = canonicalNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = canonicalNumbers(e)
		}
	case json.Number:
		return canonicalNumber(x)
	}
	return v
}

func canonicalNumber(n json.Number) json.Number {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return json.Number(strconv.FormatInt(i, 10))
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return n // out of float64 range: hash as written
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return json.Number(strconv.FormatInt(int64(f), 10))
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
}
