package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Content types of replayed bodies.
const (
	ContentTypeJSON = "application/json"
	ContentTypeSSE  = "text/event-stream"
)

// Replay builds the response body that answers a request from the entry: the chat.completion
// JSON when stream is false, and an SSE stream (see [Entry.SSE]) when it is true. includeUsage
// is the request's stream_options.include_usage. It also returns the body's content type.
//
// The entry may come from a streamed or a non-streamed answer; either serves both kinds of
// request. The usage reported is the stored answer's own.
func (e *Entry) Replay(stream, includeUsage bool) (body []byte, contentType string, err error) {
	if !stream {
		b, err := e.JSON()
		return b, ContentTypeJSON, err
	}
	b, err := e.SSE(includeUsage)
	return b, ContentTypeSSE, err
}

// JSON returns the entry as a chat.completion response body.
func (e *Entry) JSON() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encoding chat completion: %w", err)
	}
	return b, nil
}

// SSE returns the entry as a chat.completion.chunk event stream, as a provider streams it. For
// each choice: a chunk with the role; one chunk per extra message field (reasoning fields
// first, as providers send them); the refusal; the content; one chunk per tool call with its
// whole arguments; and a chunk with the finish_reason, the logprobs and other choice fields.
// Then, when includeUsage is set and the entry has usage, a chunk with "choices": [] and the
// usage; and last "data: [DONE]".
//
// Feeding the result to a [Reassembler] gives back an equal entry.
func (e *Entry) SSE(includeUsage bool) ([]byte, error) {
	var buf bytes.Buffer
	w := &sseWriter{buf: &buf, e: e}
	for _, c := range e.Choices {
		w.choice(c)
	}
	if includeUsage && e.Usage != nil {
		w.chunk(map[string]any{"choices": []any{}, "usage": e.Usage})
	}
	if w.err != nil {
		return nil, fmt.Errorf("encoding chat completion chunks: %w", w.err)
	}
	buf.WriteString("data: [DONE]\n\n")
	return buf.Bytes(), nil
}

type sseWriter struct {
	buf *bytes.Buffer
	e   *Entry
	err error
}

func (w *sseWriter) choice(c Choice) {
	m := c.Message
	w.delta(c.Index, map[string]any{"role": m.Role}, nil)
	for _, k := range sortedExtraKeys(m.Extra) {
		w.delta(c.Index, map[string]any{k: m.Extra[k]}, nil)
	}
	if m.Refusal != nil {
		w.delta(c.Index, map[string]any{"refusal": *m.Refusal}, nil)
	}
	if m.Content != nil {
		w.delta(c.Index, map[string]any{"content": *m.Content}, nil)
	}
	for i, tc := range m.ToolCalls {
		call := objectWith(tc.Extra)
		call["index"] = i
		call["id"] = tc.ID
		call["type"] = tc.Type
		call["function"] = map[string]string{
			"name":      tc.Function.Name,
			"arguments": tc.Function.Arguments,
		}
		w.delta(c.Index, map[string]any{"tool_calls": []any{call}}, nil)
	}

	last := objectWith(c.Extra)
	last["finish_reason"] = c.FinishReason
	if c.Logprobs != nil {
		last["logprobs"] = c.Logprobs
	}
	w.delta(c.Index, map[string]any{}, last)
}

// delta writes a chunk with one choice holding delta, plus the choice fields in fields.
func (w *sseWriter) delta(index int, delta, fields map[string]any) {
	ch := map[string]any{"index": index, "delta": delta, "finish_reason": nil}
	for k, v := range fields {
		ch[k] = v
	}
	w.chunk(map[string]any{"choices": []any{ch}})
}

// chunk writes one event with the entry's top-level fields and the given ones.
func (w *sseWriter) chunk(fields map[string]any) {
	if w.err != nil {
		return
	}
	m := objectWith(w.e.Extra)
	m["id"] = w.e.ID
	m["object"] = "chat.completion.chunk"
	m["created"] = w.e.Created
	m["model"] = w.e.Model
	if w.e.SystemFingerprint != "" {
		m["system_fingerprint"] = w.e.SystemFingerprint
	}
	for k, v := range fields {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		w.err = err
		return
	}
	w.buf.WriteString("data: ")
	w.buf.Write(b)
	w.buf.WriteString("\n\n")
}

// sortedExtraKeys orders extra message fields: reasoning fields first, as providers stream
// the reasoning before the answer, then the others by name.
func sortedExtraKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		ra, rb := strings.HasPrefix(a, "reasoning"), strings.HasPrefix(b, "reasoning")
		if ra != rb {
			if ra {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return keys
}
