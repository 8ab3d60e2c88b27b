package openai

import (
	"bytes"
	"log/slog"

	"github.com/tidwall/gjson"
)

// Usage is the token usage of one answer.
type Usage struct {
	// PromptTokens counts input tokens.
	PromptTokens int64
	// CompletionTokens counts output tokens; zero for embeddings.
	CompletionTokens int64
	// TotalTokens is as reported by the provider.
	TotalTokens int64
	// CachedTokens counts prompt tokens served from the provider's prompt cache
	// (prompt_tokens_details.cached_tokens).
	CachedTokens int64
}

// LogValue groups the counts.
func (u Usage) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("prompt_tokens", u.PromptTokens),
		slog.Int64("completion_tokens", u.CompletionTokens),
		slog.Int64("cached_tokens", u.CachedTokens),
	)
}

var usageKey = []byte(`"usage"`)

// UsageFromJSON reads the top-level "usage" object of a JSON answer, such as a
// chat.completion or an embeddings list. ok is false when there is none, or it is null.
func UsageFromJSON(body []byte) (u Usage, ok bool) {
	if !bytes.Contains(body, usageKey) {
		return Usage{}, false
	}
	return usageFrom(gjson.GetBytes(body, "usage"))
}

// UsageFromChunk reads usage from the data of one chat.completion.chunk event. Only the final
// chunk of a stream requested with stream_options.include_usage carries it. The "[DONE]"
// sentinel and chunks without usage give ok false.
func UsageFromChunk(data []byte) (u Usage, ok bool) {
	return UsageFromJSON(data)
}

// UsageFromTail reads usage from the last bytes of a JSON answer too large to keep whole, such
// as a large embeddings list whose "usage" comes after the vectors. It finds the last "usage"
// key in tail and reads the object after it; ok is false when tail does not hold all of it.
func UsageFromTail(tail []byte) (u Usage, ok bool) {
	i := bytes.LastIndex(tail, usageKey)
	if i < 0 {
		return Usage{}, false
	}
	rest := bytes.TrimLeft(tail[i+len(usageKey):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return Usage{}, false
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if len(rest) == 0 || rest[0] != '{' {
		return Usage{}, false
	}
	end := objectEnd(rest)
	if end < 0 || !gjson.ValidBytes(rest[:end]) {
		return Usage{}, false
	}
	return usageFrom(gjson.ParseBytes(rest[:end]))
}

// objectEnd returns the length of the JSON object that b starts with, or -1 when b ends
// first.
func objectEnd(b []byte) int {
	depth, inString, escaped := 0, false, false
	for i, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

func usageFrom(v gjson.Result) (Usage, bool) {
	if !v.IsObject() {
		return Usage{}, false
	}
	u := Usage{
		PromptTokens:     count(v.Get("prompt_tokens")),
		CompletionTokens: count(v.Get("completion_tokens")),
		TotalTokens:      count(v.Get("total_tokens")),
		CachedTokens:     count(v.Get("prompt_tokens_details.cached_tokens")),
	}
	return u, true
}

// count reads a token count; anything but a non-negative number is 0.
func count(v gjson.Result) int64 {
	if v.Type != gjson.Number {
		return 0
	}
	n := v.Int()
	if n < 0 {
		return 0
	}
	return n
}
