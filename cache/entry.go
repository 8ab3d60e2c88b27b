package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
)

// Entry is one stored answer: a complete chat.completion with its usage. Fields that this code
// does not know are kept in the Extra maps and written back, so no provider field is lost.
//
// An Entry returned by [Cache.Lookup] or [Flight.Wait] is shared with other callers and must not
// be modified.
type Entry struct {
	// ID is the completion's "id".
	ID string
	// Created is the completion's "created", in Unix seconds.
	Created int64
	// Model is the model name the provider reported.
	Model string
	// SystemFingerprint is the provider's backend fingerprint; empty when absent.
	SystemFingerprint string
	// Choices are the answers, in index order.
	Choices []Choice
	// Usage is the token usage of the answer; nil when the provider reported none.
	Usage *Usage
	// Extra holds other top-level fields (for example "service_tier"), as compact JSON.
	Extra map[string]json.RawMessage
}

// Choice is one answer of a completion.
type Choice struct {
	// Index is the choice's "index".
	Index int
	// Message is the answer.
	Message Message
	// FinishReason is why generation stopped: "stop", "length", "tool_calls", ...
	FinishReason string
	// Logprobs holds the choice's "logprobs" object as compact JSON; nil when absent.
	Logprobs json.RawMessage
	// Extra holds other fields of the choice, as compact JSON.
	Extra map[string]json.RawMessage
}

// Message is the assistant message of a choice.
type Message struct {
	// Role is "assistant".
	Role string
	// Content is the text; nil when the message has none (for example tool calls only).
	Content *string
	// Refusal is the refusal text; nil when absent.
	Refusal *string
	// ToolCalls are the tool calls, in index order.
	ToolCalls []ToolCall
	// Extra holds other fields, as compact JSON: reasoning fields such as "reasoning_content",
	// "annotations", "audio", the legacy "function_call".
	Extra map[string]json.RawMessage
}

// ToolCall is one tool call of a message.
type ToolCall struct {
	// ID is the call's "id".
	ID string
	// Type is "function" for function calls.
	Type string
	// Function is the called function.
	Function FunctionCall
	// Extra holds other fields, as compact JSON.
	Extra map[string]json.RawMessage
}

// FunctionCall is the function of a tool call.
type FunctionCall struct {
	// Name is the function's name.
	Name string
	// Arguments is the JSON text of the arguments, as the model wrote it.
	Arguments string
}

// Usage is the token usage of an answer.
type Usage struct {
	// PromptTokens counts the input tokens.
	PromptTokens int64
	// CompletionTokens counts the output tokens.
	CompletionTokens int64
	// TotalTokens is the provider's total.
	TotalTokens int64
	// Extra holds other fields (for example "prompt_tokens_details"), as compact JSON.
	Extra map[string]json.RawMessage
}

// LogValue describes the entry without its content, so that logging it leaks no answer.
func (e *Entry) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("model", e.Model), slog.Int("choices", len(e.Choices))}
	if e.Usage != nil {
		attrs = append(attrs, slog.Int64("completion_tokens", e.Usage.CompletionTokens))
	}
	return slog.GroupValue(attrs...)
}

// EntryFromJSON parses a non-streamed chat.completion response body.
func EntryFromJSON(body []byte) (*Entry, error) {
	var e Entry
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("parsing chat completion: %w", err)
	}
	if len(e.Choices) == 0 {
		return nil, errors.New("parsing chat completion: no choices")
	}
	return &e, nil
}

// MarshalJSON writes the entry as a chat.completion object.
func (e Entry) MarshalJSON() ([]byte, error) {
	m := objectWith(e.Extra)
	m["object"] = "chat.completion"
	m["id"] = e.ID
	m["created"] = e.Created
	m["model"] = e.Model
	if e.SystemFingerprint != "" {
		m["system_fingerprint"] = e.SystemFingerprint
	}
	m["choices"] = e.Choices
	if e.Choices == nil {
		m["choices"] = []Choice{}
	}
	if e.Usage != nil {
		m["usage"] = e.Usage
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads a chat.completion object.
func (e *Entry) UnmarshalJSON(b []byte) error {
	f, err := splitObject(b)
	if err != nil {
		return err
	}
	*e = Entry{}
	delete(f, "object")
	takeString(f, "id", &e.ID)
	takeInt(f, "created", &e.Created)
	takeString(f, "model", &e.Model)
	takeString(f, "system_fingerprint", &e.SystemFingerprint)
	if raw, ok := take(f, "choices"); ok {
		if err := json.Unmarshal(raw, &e.Choices); err != nil {
			return fmt.Errorf("choices: %w", err)
		}
		slices.SortStableFunc(e.Choices, func(a, b Choice) int { return a.Index - b.Index })
	}
	if raw, ok := take(f, "usage"); ok {
		e.Usage = new(Usage)
		if err := json.Unmarshal(raw, e.Usage); err != nil {
			return fmt.Errorf("usage: %w", err)
		}
	}
	e.Extra = nonEmpty(f)
	return nil
}

// MarshalJSON writes the choice.
func (c Choice) MarshalJSON() ([]byte, error) {
	m := objectWith(c.Extra)
	m["index"] = c.Index
	m["message"] = c.Message
	m["finish_reason"] = nil
	if c.FinishReason != "" {
		m["finish_reason"] = c.FinishReason
	}
	if c.Logprobs != nil {
		m["logprobs"] = c.Logprobs
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads a choice.
func (c *Choice) UnmarshalJSON(b []byte) error {
	f, err := splitObject(b)
	if err != nil {
		return err
	}
	*c = Choice{}
	var idx int64
	takeInt(f, "index", &idx)
	c.Index = int(idx)
	if raw, ok := take(f, "message"); ok {
		if err := json.Unmarshal(raw, &c.Message); err != nil {
			return fmt.Errorf("message: %w", err)
		}
	}
	takeString(f, "finish_reason", &c.FinishReason)
	c.Logprobs, _ = take(f, "logprobs")
	c.Extra = nonEmpty(f)
	return nil
}

// MarshalJSON writes the message.
func (m Message) MarshalJSON() ([]byte, error) {
	o := objectWith(m.Extra)
	o["role"] = m.Role
	o["content"] = m.Content
	if m.Refusal != nil {
		o["refusal"] = m.Refusal
	}
	if len(m.ToolCalls) > 0 {
		o["tool_calls"] = m.ToolCalls
	}
	return json.Marshal(o)
}

// UnmarshalJSON reads a message.
func (m *Message) UnmarshalJSON(b []byte) error {
	f, err := splitObject(b)
	if err != nil {
		return err
	}
	*m = Message{}
	takeString(f, "role", &m.Role)
	m.Content = takeStringPtr(f, "content")
	m.Refusal = takeStringPtr(f, "refusal")
	if raw, ok := take(f, "tool_calls"); ok {
		if err := json.Unmarshal(raw, &m.ToolCalls); err != nil {
			return fmt.Errorf("tool_calls: %w", err)
		}
	}
	m.Extra = nonEmpty(f)
	return nil
}

// MarshalJSON writes the tool call.
func (t ToolCall) MarshalJSON() ([]byte, error) {
	m := objectWith(t.Extra)
	m["id"] = t.ID
	m["type"] = t.Type
	m["function"] = map[string]string{"name": t.Function.Name, "arguments": t.Function.Arguments}
	return json.Marshal(m)
}

// UnmarshalJSON reads a tool call. An "index" field, which streamed deltas carry, is dropped.
func (t *ToolCall) UnmarshalJSON(b []byte) error {
	f, err := splitObject(b)
	if err != nil {
		return err
	}
	*t = ToolCall{}
	delete(f, "index")
	takeString(f, "id", &t.ID)
	takeString(f, "type", &t.Type)
	if raw, ok := take(f, "function"); ok {
		ff, err := splitObject(raw)
		if err != nil {
			return fmt.Errorf("function: %w", err)
		}
		takeString(ff, "name", &t.Function.Name)
		takeString(ff, "arguments", &t.Function.Arguments)
	}
	t.Extra = nonEmpty(f)
	return nil
}

// MarshalJSON writes the usage.
func (u Usage) MarshalJSON() ([]byte, error) {
	m := objectWith(u.Extra)
	m["prompt_tokens"] = u.PromptTokens
	m["completion_tokens"] = u.CompletionTokens
	m["total_tokens"] = u.TotalTokens
	return json.Marshal(m)
}

// UnmarshalJSON reads a usage object.
func (u *Usage) UnmarshalJSON(b []byte) error {
	f, err := splitObject(b)
	if err != nil {
		return err
	}
	*u = Usage{}
	takeInt(f, "prompt_tokens", &u.PromptTokens)
	takeInt(f, "completion_tokens", &u.CompletionTokens)
	takeInt(f, "total_tokens", &u.TotalTokens)
	u.Extra = nonEmpty(f)
	return nil
}

// splitObject parses a JSON object into compact raw fields, dropping null ones.
func splitObject(b []byte) (map[string]json.RawMessage, error) {
	var f map[string]json.RawMessage
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f == nil {
		return nil, errors.New("expected a JSON object, got null")
	}
	for k, v := range f {
		if string(v) == "null" {
			delete(f, k)
			continue
		}
		f[k] = canonicalRaw(v)
	}
	return f, nil
}

// take removes and returns field k.
func take(f map[string]json.RawMessage, k string) (json.RawMessage, bool) {
	v, ok := f[k]
	delete(f, k)
	return v, ok
}

// takeString moves a string field into dst; a field of another type stays in f.
func takeString(f map[string]json.RawMessage, k string, dst *string) {
	if p := takeStringPtr(f, k); p != nil {
		*dst = *p
	}
}

func takeStringPtr(f map[string]json.RawMessage, k string) *string {
	var s string
	if raw, ok := f[k]; !ok || json.Unmarshal(raw, &s) != nil {
		return nil
	}
	delete(f, k)
	return &s
}

// takeInt moves an integer field into dst; a field of another type stays in f.
func takeInt(f map[string]json.RawMessage, k string, dst *int64) {
	var n int64
	if raw, ok := f[k]; ok && json.Unmarshal(raw, &n) == nil {
		*dst = n
		delete(f, k)
	}
}

// canonicalRaw rewrites a JSON value with sorted object keys, compact and escaped as
// json.Marshal writes it, so that a field read from a provider, from a stored entry or from
// reassembled chunks has the same bytes. Numbers keep their spelling.
func canonicalRaw(v []byte) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return v
	}
	return mustRaw(x)
}

// mustRaw marshals a value decoded from JSON, which cannot fail.
func mustRaw(x any) json.RawMessage {
	b, err := json.Marshal(x)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

func nonEmpty(f map[string]json.RawMessage) map[string]json.RawMessage {
	if len(f) == 0 {
		return nil
	}
	return f
}

func objectWith(extra map[string]json.RawMessage) map[string]any {
	m := make(map[string]any, len(extra)+8)
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// Finish reasons of answers that [Storable] accepts. "tool_calls" and the legacy
// "function_call" are complete answers too, since the key covers the tools offered.
var storableFinish = map[string]bool{
	"stop":          true,
	"length":        true,
	"tool_calls":    true,
	"function_call": true,
}

// Storable reports whether an answer may be stored, and if not, why. Only complete, successful
// answers are: HTTP status 200, every choice finished with "stop", "length", "tool_calls" or
// "function_call", a streamed answer that ended with [DONE] (streamComplete; pass true for a
// non-streamed answer that was read whole), and a client that stayed to the end (clientGone
// false: a client that left may have cut the upstream answer short).
func Storable(status int, e *Entry, streamComplete, clientGone bool) (bool, string) {
	switch {
	case status != 200:
		return false, fmt.Sprintf("status %d", status)
	case clientGone:
		return false, "client went away"
	case !streamComplete:
		return false, "stream did not end with [DONE]"
	case e == nil || len(e.Choices) == 0:
		return false, "no answer"
	}
	for _, c := range e.Choices {
		if !storableFinish[c.FinishReason] {
			return false, fmt.Sprintf("finish_reason %q", c.FinishReason)
		}
	}
	return true, ""
}
