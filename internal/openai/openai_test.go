package openai

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestErrorBody(t *testing.T) {
	tests := []struct {
		name string
		err  Error
		want string
	}{
		{
			name: "all fields",
			err: Error{Message: `model "x" not found`, Type: TypeInvalidRequest, Param: "model",
				Code: CodeModelNotFound},
			want: `{"error":{"message":"model \"x\" not found","type":"invalid_request_error",` +
				`"param":"model","code":"model_not_found"}}`,
		},
		{
			name: "null param and code",
			err:  Error{Message: "bad", Type: TypeInvalidRequest},
			want: `{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(tt.err.Body()); got != tt.want {
				t.Errorf("Body() = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseChatRequest(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		want      *ChatRequest
		wantParam string // when an error is expected
	}{
		{
			name: "minimal",
			body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			want: &ChatRequest{Model: "m", N: 1, Messages: 1},
		},
		{
			name: "stream with usage",
			body: `{"model":"m","stream":true,"n":2,"stream_options":{"include_usage":true},` +
				`"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]}`,
			want: &ChatRequest{Model: "m", Stream: true, IncludeUsage: true, N: 2, Messages: 2},
		},
		{
			name: "nulls",
			body: `{"model":"m","stream":null,"n":null,"stream_options":null,"messages":[{"role":"user"}]}`,
			want: &ChatRequest{Model: "m", N: 1, Messages: 1},
		},
		{name: "not json", body: `{"model":`, wantParam: ""},
		{name: "not object", body: `[1]`, wantParam: ""},
		{name: "no model", body: `{"messages":[{"role":"user"}]}`, wantParam: "model"},
		{name: "model number", body: `{"model":1,"messages":[{"role":"user"}]}`, wantParam: "model"},
		{name: "duplicate model", body: `{"model":"a","model":"b","messages":[{"role":"u"}]}`, wantParam: "model"},
		{name: "escaped model key", body: `{"mod\u0065l":"a","messages":[{"role":"u"}]}`, wantParam: "model"},
		{name: "no messages", body: `{"model":"m"}`, wantParam: "messages"},
		{name: "empty messages", body: `{"model":"m","messages":[]}`, wantParam: "messages"},
		{name: "message not object", body: `{"model":"m","messages":["hi"]}`, wantParam: "messages[0]"},
		{
			name:      "message no role",
			body:      `{"model":"m","messages":[{"role":"u"},{"content":"x"}]}`,
			wantParam: "messages[1].role",
		},
		{name: "stream string", body: `{"model":"m","stream":"yes","messages":[{"role":"u"}]}`, wantParam: "stream"},
		{name: "n zero", body: `{"model":"m","n":0,"messages":[{"role":"u"}]}`, wantParam: "n"},
		{name: "n float", body: `{"model":"m","n":1.5,"messages":[{"role":"u"}]}`, wantParam: "n"},
		{
			name:      "stream_options array",
			body:      `{"model":"m","stream_options":[],"messages":[{"role":"u"}]}`,
			wantParam: "stream_options",
		},
		{
			name:      "include_usage string",
			body:      `{"model":"m","stream_options":{"include_usage":"y"},"messages":[{"role":"u"}]}`,
			wantParam: "stream_options.include_usage",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseChatRequest([]byte(tt.body))
			if tt.want == nil {
				var oe *Error
				if !errors.As(err, &oe) {
					t.Fatalf("ParseChatRequest(%s) error = %v, want *Error", tt.body, err)
				}
				if oe.Param != tt.wantParam || oe.Type != TypeInvalidRequest {
					t.Errorf("ParseChatRequest(%s) = %+v, want param %q", tt.body, oe, tt.wantParam)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseChatRequest(%s) error = %v", tt.body, err)
			}
			tt.want.Raw = []byte(tt.body)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseChatRequest(%s) (-want +got):\n%s", tt.body, diff)
			}
		})
	}
}

func TestParseEmbeddingsRequest(t *testing.T) {
	tests := []struct {
		body       string
		wantInputs int
		wantParam  string
	}{
		{body: `{"model":"e","input":"hello"}`, wantInputs: 1},
		{body: `{"model":"e","input":["a","b","c"]}`, wantInputs: 3},
		{body: `{"model":"e","input":[1,2,3]}`, wantInputs: 1},
		{body: `{"model":"e","input":[[1],[2]]}`, wantInputs: 2},
		{body: `{"model":"e"}`, wantParam: "input"},
		{body: `{"model":"e","input":""}`, wantParam: "input"},
		{body: `{"model":"e","input":[]}`, wantParam: "input"},
		{body: `{"input":"x"}`, wantParam: "model"},
	}
	for _, tt := range tests {
		got, err := ParseEmbeddingsRequest([]byte(tt.body))
		if tt.wantParam != "" {
			var oe *Error
			if !errors.As(err, &oe) || oe.Param != tt.wantParam {
				t.Errorf("ParseEmbeddingsRequest(%s) error = %v, want param %q", tt.body, err, tt.wantParam)
			}
			continue
		}
		if err != nil || got.Inputs != tt.wantInputs || got.Model != "e" {
			t.Errorf("ParseEmbeddingsRequest(%s) = %+v, %v, want %d inputs", tt.body, got, err, tt.wantInputs)
		}
	}
}

func TestRewrite(t *testing.T) {
	body := `{"model":"a", "messages":[{"role":"user","content":"model"}],"stream":true}`
	got, err := SetModel([]byte(body), "b-2024")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model":"b-2024", "messages":[{"role":"user","content":"model"}],"stream":true}`
	if string(got) != want {
		t.Errorf("SetModel() = %s, want %s", got, want)
	}

	tests := []struct{ in, want string }{
		{`{"model":"a","stream":true}`, `{"model":"a","stream":true,"stream_options":{"include_usage":true}}`},
		{`{"model":"a","stream_options":null}`, `{"model":"a","stream_options":{"include_usage":true}}`},
		{`{"stream_options":{"x":1}}`, `{"stream_options":{"x":1,"include_usage":true}}`},
		{`{"stream_options":{"include_usage":false}}`, `{"stream_options":{"include_usage":true}}`},
	}
	for _, tt := range tests {
		got, err := SetIncludeUsage([]byte(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("SetIncludeUsage(%s) = %s, %v, want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestUsage(t *testing.T) {
	full := Usage{PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15, CachedTokens: 4}
	tests := []struct {
		name   string
		fn     func([]byte) (Usage, bool)
		in     string
		want   Usage
		wantOK bool
	}{
		{
			name: "json", fn: UsageFromJSON, wantOK: true, want: full,
			in: `{"id":"x","usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,` +
				`"prompt_tokens_details":{"cached_tokens":4}}}`,
		},
		{name: "json null", fn: UsageFromJSON, in: `{"usage":null}`},
		{name: "json none", fn: UsageFromJSON, in: `{"id":"x"}`},
		{name: "chunk done", fn: UsageFromChunk, in: `[DONE]`},
		{
			name: "chunk", fn: UsageFromChunk, wantOK: true,
			want: Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5},
			in: `{"object":"chat.completion.chunk","choices":[],` +
				`"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
		},
		{
			name: "tail", fn: UsageFromTail, wantOK: true, want: Usage{PromptTokens: 8, TotalTokens: 8},
			in: `0.1,0.2]}],"model":"e","usage": {"prompt_tokens":8,"total_tokens":8}}` + "\n",
		},
		{name: "tail cut", fn: UsageFromTail, in: `],"usage":{"prompt_tokens":8,"total_`},
		{name: "negative", fn: UsageFromJSON, wantOK: true, in: `{"usage":{"prompt_tokens":-1}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.fn([]byte(tt.in))
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("usage(%s) = %+v, %v, want %+v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

type gotEvent struct {
	Type, ID, Data string
}

func collect(p *SSEParser, chunks ...string) []gotEvent {
	var out []gotEvent
	for _, c := range chunks {
		p.Feed([]byte(c), func(e Event) {
			out = append(out, gotEvent{e.Type, e.ID, string(e.Data)})
		})
	}
	return out
}

func TestSSEParser(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []gotEvent
	}{
		{
			name:   "two events one chunk",
			chunks: []string{"data: a\n\ndata: b\n\n"},
			want:   []gotEvent{{Data: "a"}, {Data: "b"}},
		},
		{
			name:   "split everywhere",
			chunks: []string{"da", "ta: {\"x\"", ":1}\n", "\n", "data", ": b\n\n"},
			want:   []gotEvent{{Data: `{"x":1}`}, {Data: "b"}},
		},
		{
			name:   "crlf split between cr and lf",
			chunks: []string{"data: a\r", "\n\r", "\ndata: b\r\n\r\n"},
			want:   []gotEvent{{Data: "a"}, {Data: "b"}},
		},
		{
			name:   "bare cr",
			chunks: []string{"data: a\r\rdata: b\r\r"},
			want:   []gotEvent{{Data: "a"}, {Data: "b"}},
		},
		{
			name:   "comments multi-line event and id",
			chunks: []string{": keepalive\n\nevent: delta\nid: 7\ndata: l1\ndata:l2\ndata\n\n"},
			want:   []gotEvent{{Type: "delta", ID: "7", Data: "l1\nl2\n"}},
		},
		{
			name:   "incomplete event not dispatched",
			chunks: []string{"data: a\n\ndata: b\n"},
			want:   []gotEvent{{Data: "a"}},
		},
		{
			name:   "event without data ignored",
			chunks: []string{"event: x\n\ndata: y\n\n"},
			want:   []gotEvent{{Data: "y"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect(&SSEParser{}, tt.chunks...)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSSEParserLimit(t *testing.T) {
	p := &SSEParser{MaxEventBytes: 16}
	big := "data: " + strings.Repeat("x", 40) + "\n\n"
	got := collect(p, big[:10], big[10:30], big[30:], "data: ok\n\n", "data: "+strings.Repeat("y", 40)+"\n\n")
	if diff := cmp.Diff([]gotEvent{{Data: "ok"}}, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if p.Dropped != 2 {
		t.Errorf("Dropped = %d, want 2", p.Dropped)
	}
}

func FuzzParseChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","stream":true,"stream_options":{"include_usage":false},"n":2,` +
		`"messages":[{"role":"u"}]}`))
	f.Add([]byte(`{"model":"m","messages":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseChatRequest(b)
		if err != nil {
			var oe *Error
			if !errors.As(err, &oe) {
				t.Fatalf("error %v is not *Error", err)
			}
			return
		}
		// A body we accept must be valid JSON for other parsers too, and the rewrites must
		// keep it valid with the new values in place.
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Skip("accepted by gjson, rejected by encoding/json (for example invalid UTF-8)")
		}
		if v["model"] != r.Model {
			t.Fatalf("model = %q, encoding/json reads %v", r.Model, v["model"])
		}
		out, err := SetModel(b, "rewritten")
		if err != nil {
			t.Fatal(err)
		}
		out, err = SetIncludeUsage(out)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseChatRequest(out)
		if err != nil {
			t.Fatalf("rewritten body rejected: %v", err)
		}
		if r2.Model != "rewritten" || !r2.IncludeUsage || r2.Messages != r.Messages {
			t.Fatalf("rewritten = %+v, want model rewritten and usage on", r2)
		}
	})
}

func FuzzSSE(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\ndata: [DONE]\n\n"), uint8(3))
	f.Add([]byte(": c\r\nevent: e\r\ndata: x\r\ndata: y\r\n\r\n"), uint8(1))
	f.Add([]byte("data: a\r\rdata: b\r\r"), uint8(7))
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		whole := collect(&SSEParser{}, string(b))
		n := int(step%16) + 1
		var chunks []string
		for i := 0; i < len(b); i += n {
			chunks = append(chunks, string(b[i:min(i+n, len(b))]))
		}
		split := collect(&SSEParser{}, chunks...)
		if diff := cmp.Diff(whole, split); diff != "" {
			t.Fatalf("events differ when fed in %d-byte chunks (-whole +split):\n%s", n, diff)
		}
	})
}
