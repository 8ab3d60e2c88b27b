package cache

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const completionJSON = `{
  "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
  "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_1", "service_tier": "default",
  "choices": [{
    "index": 0, "finish_reason": "stop",
    "message": {"role": "assistant", "content": "Xin chào <b>bạn</b>", "refusal": null,
      "reasoning_content": "think first", "annotations": [{"type": "url", "z": 1, "a": 2}]},
    "logprobs": {"content": [{"token": "Xin", "logprob": -0.1, "bytes": [88], "top_logprobs": []}],
      "refusal": null}
  }],
  "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 0}}
}`

const toolCallJSON = `{
  "id": "chatcmpl-2", "object": "chat.completion", "created": 1700000001, "model": "m",
  "choices": [{"index": 0, "finish_reason": "tool_calls",
    "message": {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call_a", "type": "function", "function": {"name": "weather",
        "arguments": "{\"city\":\"Huế\"}"}},
      {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}}
    ]}}],
  "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}
}`

func mustEntry(t *testing.T, body string) *Entry {
	t.Helper()
	e, err := EntryFromJSON([]byte(body))
	if err != nil {
		t.Fatalf("EntryFromJSON = %v", err)
	}
	return e
}

func reassemble(t *testing.T, sse []byte) *Reassembler {
	t.Helper()
	var r Reassembler
	// Feed the stream in small pieces, as a network delivers it.
	for len(sse) > 0 {
		n := min(7, len(sse))
		if _, err := r.Write(sse[:n]); err != nil {
			t.Fatalf("Reassembler.Write = %v", err)
		}
		sse = sse[n:]
	}
	return &r
}

func TestReplayRoundTrip(t *testing.T) {
	for _, body := range []string{completionJSON, toolCallJSON} {
		e := mustEntry(t, body)

		// JSON → entry → JSON → entry.
		b, err := e.JSON()
		if err != nil {
			t.Fatalf("JSON = %v", err)
		}
		if diff := cmp.Diff(e, mustEntry(t, string(b))); diff != "" {
			t.Errorf("JSON round trip (-want +got):\n%s", diff)
		}

		// JSON → entry → SSE → entry: the stream parses back to the same entry.
		sse, err := e.SSE(true)
		if err != nil {
			t.Fatalf("SSE = %v", err)
		}
		r := reassemble(t, sse)
		if !r.Done() {
			t.Errorf("reassembled stream not done:\n%s", sse)
		}
		got, err := r.Result()
		if err != nil {
			t.Fatalf("Result = %v", err)
		}
		if diff := cmp.Diff(e, got); diff != "" {
			t.Errorf("SSE round trip (-want +got):\n%s\nstream:\n%s", diff, sse)
		}
	}
}

func TestSSEUsageChunk(t *testing.T) {
	e := mustEntry(t, completionJSON)
	for _, include := range []bool{false, true} {
		sse, _, err := e.Replay(true, include)
		if err != nil {
			t.Fatalf("Replay = %v", err)
		}
		events := strings.Split(strings.TrimSpace(string(sse)), "\n\n")
		if last := events[len(events)-1]; last != "data: [DONE]" {
			t.Errorf("last event = %q, want data: [DONE]", last)
		}
		usage := events[len(events)-2]
		hasUsage := strings.Contains(usage, `"choices":[]`) && strings.Contains(usage, `"usage"`)
		if hasUsage != include {
			t.Errorf("include_usage %v: usage chunk present = %v:\n%s", include, hasUsage, sse)
		}
		for _, ev := range events[:len(events)-1] {
			if !strings.Contains(ev, `"object":"chat.completion.chunk"`) {
				t.Errorf("event is not a chunk: %s", ev)
			}
		}
		r := reassemble(t, sse)
		got, _ := r.Result()
		if (got.Usage != nil) != include {
			t.Errorf("include_usage %v: reassembled usage = %+v", include, got.Usage)
		}
	}
	body, ct, err := e.Replay(false, false)
	if err != nil || ct != ContentTypeJSON || !json.Valid(body) {
		t.Errorf("Replay(false) = %s, %q, %v", body, ct, err)
	}
}

func TestReassembleFragments(t *testing.T) {
	chunks := []string{
		`{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[` +
			`{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"Let"},` +
			`"finish_reason":null}]}`,
		`{"id":"c1","created":5,"model":"m","choices":[{"index":0,"delta":` +
			`{"reasoning_content":" me think"}}]}`,
		`{"id":"c1","created":5,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[` +
			`{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}` +
			`]}}]}`,
		`{"id":"c1","created":5,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[` +
			`{"index":1,"id":"call_2","type":"function","function":{"name":"put","arguments":"{\"b"}},` +
			`{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}`,
		`{"id":"c1","created":5,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[` +
			`{"index":0,"function":{"arguments":"1}"}},{"index":1,"function":{"arguments":"\":2}"}}` +
			`]}}]}`,
		`{"id":"c1","created":5,"model":"m","system_fingerprint":"fp","choices":[{"index":0,` +
			`"delta":{},"finish_reason":"tool_calls"}]}`,
		`{"id":"c1","created":5,"model":"m","choices":[],"usage":{"prompt_tokens":3,` +
			`"completion_tokens":4,"total_tokens":7}}`,
		`[DONE]`,
	}
	var r Reassembler
	for _, c := range chunks {
		if err := r.Add([]byte(c)); err != nil {
			t.Fatalf("Add(%s) = %v", c, err)
		}
	}
	got, err := r.Result()
	if err != nil {
		t.Fatalf("Result = %v", err)
	}
	want := &Entry{
		ID: "c1", Created: 5, Model: "m", SystemFingerprint: "fp",
		Choices: []Choice{{
			FinishReason: "tool_calls",
			Message: Message{
				Role: "assistant",
				ToolCalls: []ToolCall{
					{ID: "call_1", Type: "function", Function: FunctionCall{"get", `{"a":1}`}},
					{ID: "call_2", Type: "function", Function: FunctionCall{"put", `{"b":2}`}},
				},
				Extra: map[string]json.RawMessage{
					"reasoning_content": json.RawMessage(`"Let me think"`),
				},
			},
		}},
		Usage: &Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Result (-want +got):\n%s", diff)
	}
	if err := r.Add([]byte(`{"choices":[]}`)); err == nil {
		t.Errorf("Add after [DONE] = nil, want error")
	}
}

func TestReassembleErrors(t *testing.T) {
	for _, data := range []string{`{not json`, `{"error":{"message":"overloaded"}}`, `[1]`} {
		var r Reassembler
		if err := r.Add([]byte(data)); err == nil {
			t.Errorf("Add(%s) = nil, want error", data)
		}
	}
	var r Reassembler
	if _, err := r.Result(); err == nil {
		t.Errorf("Result of empty stream = nil error, want one")
	}
	var big Reassembler
	if _, err := big.Write(bytes.Repeat([]byte("x"), maxSSELine+1)); err == nil {
		t.Errorf("Write of an endless line = nil error, want one")
	}
}

func TestSSEFraming(t *testing.T) {
	stream := ": keep-alive\r\n\r\nevent: x\r\ndata: {\"id\":\"a\",\"choices\":[{\"index\":0," +
		"\r\ndata: \"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\r\n\r\n" +
		"data:[DONE]\n\n"
	r := reassemble(t, []byte(stream))
	got, err := r.Result()
	if err != nil || !r.Done() {
		t.Fatalf("Result = %v, done %v", err, r.Done())
	}
	if c := got.Choices[0].Message.Content; c == nil || *c != "hi" {
		t.Errorf("content = %v, want hi", c)
	}
}

func TestStorable(t *testing.T) {
	ok := mustEntry(t, completionJSON)
	withFinish := func(f string) *Entry {
		e := *ok
		e.Choices = []Choice{{FinishReason: f}}
		return &e
	}
	tests := []struct {
		name           string
		status         int
		e              *Entry
		complete, gone bool
		want           bool
	}{
		{"complete", 200, ok, true, false, true},
		{"length", 200, withFinish("length"), true, false, true},
		{"tool calls", 200, withFinish("tool_calls"), true, false, true},
		{"content filter", 200, withFinish("content_filter"), true, false, false},
		{"no finish", 200, withFinish(""), true, false, false},
		{"status 500", 500, ok, true, false, false},
		{"status 206", 206, ok, true, false, false},
		{"stream cut", 200, ok, false, false, false},
		{"client gone", 200, ok, true, true, false},
		{"nil entry", 200, nil, true, false, false},
		{"no choices", 200, &Entry{}, true, false, false},
	}
	for _, tt := range tests {
		got, reason := Storable(tt.status, tt.e, tt.complete, tt.gone)
		if got != tt.want || (got == (reason != "")) {
			t.Errorf("%s: Storable = %v, %q, want %v", tt.name, got, reason, tt.want)
		}
	}
}

func TestParseCacheControl(t *testing.T) {
	tests := []struct {
		h       string
		want    Control
		ttl     time.Duration
		skipGet bool
	}{
		{"", Control{}, time.Hour, false},
		{"no-cache", Control{NoCache: true}, time.Hour, true},
		{"No-Store", Control{NoStore: true}, 0, false},
		{"max-age=60", Control{MaxAge: time.Minute, HasMaxAge: true}, time.Minute, false},
		{"max-age=999999", Control{MaxAge: 999999 * time.Second, HasMaxAge: true}, time.Hour,
			false},
		{"max-age=0", Control{HasMaxAge: true}, 0, true},
		{`max-age="30", no-cache`, Control{NoCache: true, MaxAge: 30 * time.Second,
			HasMaxAge: true}, 30 * time.Second, true},
		{"max-age=-1, max-age=x, private", Control{}, time.Hour, false},
	}
	for _, tt := range tests {
		got := ParseCacheControl(tt.h)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseCacheControl(%q) (-want +got):\n%s", tt.h, diff)
		}
		if ttl := got.TTL(time.Hour); ttl != tt.ttl {
			t.Errorf("ParseCacheControl(%q).TTL(1h) = %v, want %v", tt.h, ttl, tt.ttl)
		}
		if got.SkipLookup() != tt.skipGet {
			t.Errorf("ParseCacheControl(%q).SkipLookup() = %v", tt.h, got.SkipLookup())
		}
	}
}

func TestValueCodec(t *testing.T) {
	e := mustEntry(t, completionJSON)
	now := time.UnixMilli(1_700_000_000_000)
	in := &record{entry: e, storedAt: now, expires: now.Add(time.Hour)}
	for _, compressAbove := range []int{64, 1 << 20} {
		b, size, err := encodeValue(in, compressAbove)
		if err != nil {
			t.Fatalf("encodeValue = %v", err)
		}
		compressed := b[1]&flagS2 != 0
		if compressed != (size > compressAbove) {
			t.Errorf("compressAbove %d, size %d: compressed = %v", compressAbove, size, compressed)
		}
		got, err := decodeValue(b)
		if err != nil {
			t.Fatalf("decodeValue = %v", err)
		}
		if diff := cmp.Diff(e, got.entry); diff != "" {
			t.Errorf("decoded entry (-want +got):\n%s", diff)
		}
		if !got.storedAt.Equal(now) || !got.expires.Equal(now.Add(time.Hour)) {
			t.Errorf("decoded times = %v, %v", got.storedAt, got.expires)
		}
	}
	good, _, _ := encodeValue(in, 64)
	bad := map[string][]byte{
		"short":        good[:5],
		"version 2":    append([]byte{2}, good[1:]...),
		"unknown flag": append([]byte{valueVersion, 0x80}, good[2:]...),
		"garbage s2":   append(append([]byte{}, good[:valueHeaderBytes]...), 0xff, 0xff, 0xff),
		"garbage json": append(append([]byte{valueVersion, 0}, good[2:valueHeaderBytes]...), '{'),
	}
	for name, b := range bad {
		if _, err := decodeValue(b); err == nil {
			t.Errorf("decodeValue(%s) = nil error, want one", name)
		}
	}
}

func TestEntryLogValueHidesContent(t *testing.T) {
	e := mustEntry(t, completionJSON)
	if s := e.LogValue().String(); strings.Contains(s, "chào") {
		t.Errorf("LogValue = %s, shows content", s)
	}
}
