package openai

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// ChatRequest is what the gateway reads from a chat-completions request body. The body itself
// stays in Raw, untouched; use [SetModel] and [SetIncludeUsage] to change it.
type ChatRequest struct {
	// Raw is the request body as received. It is shared with the caller, not copied.
	Raw []byte
	// Model is the requested model.
	Model string
	// Stream reports whether the client asked for server-sent events.
	Stream bool
	// IncludeUsage is stream_options.include_usage.
	IncludeUsage bool
	// N is the number of choices asked for, 1 when absent.
	N int
	// Messages is the number of messages.
	Messages int
}

// LogValue describes the request without its messages, so prompts never reach a log.
func (r *ChatRequest) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("model", r.Model),
		slog.Bool("stream", r.Stream),
		slog.Int("n", r.N),
		slog.Int("messages", r.Messages),
		slog.Int("bytes", len(r.Raw)),
	)
}

// ParseChatRequest reads and validates a chat-completions request body. An invalid body gives
// an [*Error] of type [TypeInvalidRequest] naming the offending param; its message never
// quotes the body.
//
// Fields the gateway reads must appear at most once at the top level: a duplicate "model"
// could otherwise route and bill one model while the provider serves another.
func ParseChatRequest(b []byte) (*ChatRequest, error) {
	r := &ChatRequest{Raw: b, N: 1}
	var seen seenFields
	var msgs gjson.Result
	err := eachField(b, func(k string, v gjson.Result) (err error) {
		switch k {
		case "model":
			r.Model, err = stringField(&seen, k, v)
		case "stream":
			r.Stream, err = boolField(&seen, k, v)
		case "n":
			r.N, err = nField(&seen, v)
		case "stream_options":
			r.IncludeUsage, err = streamOptions(&seen, v)
		case "messages":
			err = seen.mark(k)
			msgs = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.Model == "" {
		return nil, invalid("model", "you must provide a model parameter")
	}
	r.Messages, err = countMessages(msgs)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// EmbeddingsRequest is what the gateway reads from an embeddings request body.
type EmbeddingsRequest struct {
	// Raw is the request body as received. It is shared with the caller, not copied.
	Raw []byte
	// Model is the requested model.
	Model string
	// Inputs is the number of inputs: 1 for a single string or token list.
	Inputs int
}

// LogValue describes the request without its input text.
func (r *EmbeddingsRequest) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("model", r.Model),
		slog.Int("inputs", r.Inputs),
		slog.Int("bytes", len(r.Raw)),
	)
}

// ParseEmbeddingsRequest reads and validates an embeddings request body, with the same error
// rules as [ParseChatRequest].
func ParseEmbeddingsRequest(b []byte) (*EmbeddingsRequest, error) {
	r := &EmbeddingsRequest{Raw: b}
	var seen seenFields
	var input gjson.Result
	err := eachField(b, func(k string, v gjson.Result) (err error) {
		switch k {
		case "model":
			r.Model, err = stringField(&seen, k, v)
		case "input":
			err = seen.mark(k)
			input = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.Model == "" {
		return nil, invalid("model", "you must provide a model parameter")
	}
	switch {
	case input.Type == gjson.String && input.Str != "":
		r.Inputs = 1
	case input.IsArray():
		if n := len(input.Array()); n > 0 {
			r.Inputs = n
			if first := input.Get("0"); first.Type == gjson.Number {
				r.Inputs = 1 // one list of token ids
			}
		}
	}
	if r.Inputs == 0 {
		return nil, invalid("input", "input must be a non-empty string or array")
	}
	return r, nil
}

// parseObject checks that b is one valid JSON object.
func parseObject(b []byte) (gjson.Result, error) {
	if !gjson.ValidBytes(b) {
		return gjson.Result{}, invalid("", "the request body is not valid JSON")
	}
	root := gjson.ParseBytes(b)
	if !root.IsObject() {
		return gjson.Result{}, invalid("", "the request body must be a JSON object")
	}
	return root, nil
}

// eachField checks that b is one JSON object and calls f with each top-level key and value
// in order, after [plainKey] accepts the key. It stops at the first error and returns it.
func eachField(b []byte, f func(key string, v gjson.Result) error) error {
	root, err := parseObject(b)
	if err != nil {
		return err
	}
	root.ForEach(func(k, v gjson.Result) bool {
		if err = plainKey(k); err == nil {
			err = f(k.Str, v)
		}
		return err == nil
	})
	return err
}

// plainKey rejects a top-level key written with escapes that spells a field the gateway
// reads or rewrites, such as "mod\u0065l": the rewrite helpers match keys byte for byte, so
// such a key would survive next to the rewritten one.
func plainKey(k gjson.Result) error {
	if strings.IndexByte(k.Raw, '\\') < 0 {
		return nil
	}
	switch k.Str {
	case "model", "stream", "n", "stream_options", "messages", "input":
		return invalid(k.Str, k.Str+" must not be written with escapes")
	}
	return nil
}

// seenFields detects top-level fields given twice.
type seenFields map[string]bool

func (s *seenFields) mark(name string) error {
	if *s == nil {
		*s = seenFields{}
	}
	if (*s)[name] {
		return invalid(name, fmt.Sprintf("%s is given more than once", name))
	}
	(*s)[name] = true
	return nil
}

func stringField(s *seenFields, name string, v gjson.Result) (string, error) {
	if err := s.mark(name); err != nil {
		return "", err
	}
	if v.Type != gjson.String {
		return "", invalid(name, fmt.Sprintf("%s must be a string", name))
	}
	return v.Str, nil
}

func boolField(s *seenFields, name string, v gjson.Result) (bool, error) {
	if err := s.mark(name); err != nil {
		return false, err
	}
	switch v.Type {
	case gjson.Null:
		return false, nil
	case gjson.True, gjson.False:
		return v.Bool(), nil
	}
	return false, invalid(name, fmt.Sprintf("%s must be a boolean", name))
}

func nField(s *seenFields, v gjson.Result) (int, error) {
	if err := s.mark("n"); err != nil {
		return 0, err
	}
	if v.Type == gjson.Null {
		return 1, nil
	}
	n, err := strconv.Atoi(v.Raw)
	if v.Type != gjson.Number || err != nil || n < 1 || n > 128 {
		return 0, invalid("n", "n must be an integer between 1 and 128")
	}
	return n, nil
}

func streamOptions(s *seenFields, v gjson.Result) (bool, error) {
	if err := s.mark("stream_options"); err != nil {
		return false, err
	}
	switch {
	case v.Type == gjson.Null:
		return false, nil
	case !v.IsObject():
		return false, invalid("stream_options", "stream_options must be an object")
	}
	u := v.Get("include_usage")
	switch u.Type {
	case gjson.Null:
		return false, nil
	case gjson.True, gjson.False:
		return u.Bool(), nil
	}
	return false, invalid("stream_options.include_usage", "include_usage must be a boolean")
}

// countMessages checks that msgs is a non-empty array of objects that each have a role.
func countMessages(msgs gjson.Result) (int, error) {
	if !msgs.IsArray() {
		return 0, invalid("messages", "messages must be a non-empty array")
	}
	n := 0
	var err error
	msgs.ForEach(func(_, m gjson.Result) bool {
		param := "messages[" + strconv.Itoa(n) + "]"
		if !m.IsObject() {
			err = invalid(param, param+" must be an object")
			return false
		}
		if role := m.Get("role"); role.Type != gjson.String || role.Str == "" {
			err = invalid(param+".role", param+".role must be a non-empty string")
			return false
		}
		n++
		return true
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, invalid("messages", "messages must be a non-empty array")
	}
	return n, nil
}
