package fakeprovider

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

// defaultTestTimeout bounds every test context.
const defaultTestTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

func post(t *testing.T, h http.Handler, path, body string,
	hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(testContext(t), http.MethodPost, path,
		strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decoding %q: %v", rec.Body.String(), err)
	}
	return v
}

// gotCompletion is the part of a chat completion the tests compare.
type gotCompletion struct {
	Model             string
	Fingerprint       string
	Words             int
	FinishReason      string
	ToolName          string
	PromptTokens      int
	CompletionTokens  int
	TotalTokens       int
	HasUsage          bool
	HeaderProviderVal string
}

func summarize(t *testing.T, rec *httptest.ResponseRecorder) gotCompletion {
	t.Helper()
	c := decode[completion](t, rec)
	if len(c.Choices) != 1 {
		t.Fatalf("choices = %d, want 1", len(c.Choices))
	}
	ch := c.Choices[0]
	g := gotCompletion{
		Model:             c.Model,
		Fingerprint:       c.SystemFingerprint,
		FinishReason:      ch.FinishReason,
		HeaderProviderVal: rec.Header().Get(HeaderProvider),
	}
	if ch.Message.Content != nil {
		g.Words = len(strings.Fields(*ch.Message.Content))
	}
	if len(ch.Message.ToolCalls) > 0 {
		g.ToolName = ch.Message.ToolCalls[0].Function.Name
	}
	if c.Usage != nil {
		g.HasUsage = true
		g.PromptTokens = c.Usage.PromptTokens
		g.CompletionTokens = c.Usage.CompletionTokens
		g.TotalTokens = c.Usage.TotalTokens
	}
	return g
}

func TestChatCompletions(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		behavior Behavior
		check    func(t *testing.T, g gotCompletion)
	}{
		{
			name: "plain",
			body: `{"model":"m-1","messages":[{"role":"system","content":"be brief"},` +
				`{"role":"user","content":"hello there  world"}]}`,
			check: func(t *testing.T, g gotCompletion) {
				if g.Model != "m-1" || g.Fingerprint != "prov" || g.HeaderProviderVal != "prov" {
					t.Errorf("model, fingerprint, header = %q, %q, %q; want m-1, prov, prov",
						g.Model, g.Fingerprint, g.HeaderProviderVal)
				}
				if g.PromptTokens != 5 {
					t.Errorf("prompt_tokens = %d, want 5", g.PromptTokens)
				}
				if g.Words < minWords || g.Words >= minWords+wordSpread {
					t.Errorf("words = %d, want in [%d, %d)", g.Words, minWords, minWords+wordSpread)
				}
				if g.CompletionTokens != g.Words || g.TotalTokens != 5+g.Words {
					t.Errorf("usage = %+v, want completion %d", g, g.Words)
				}
				if g.FinishReason != "stop" {
					t.Errorf("finish_reason = %q, want stop", g.FinishReason)
				}
			},
		},
		{
			name: "content parts",
			body: `{"model":"m","messages":[{"role":"user","content":[` +
				`{"type":"text","text":"one two"},{"type":"image_url","image_url":{"url":"x"}},` +
				`{"type":"text","text":"three"}]}]}`,
			check: func(t *testing.T, g gotCompletion) {
				if g.PromptTokens != 3 {
					t.Errorf("prompt_tokens = %d, want 3", g.PromptTokens)
				}
			},
		},
		{
			name: "max_tokens",
			body: `{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`,
			check: func(t *testing.T, g gotCompletion) {
				want := gotCompletion{Model: "m", Fingerprint: "prov", Words: 2,
					FinishReason: "length", PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3,
					HasUsage: true, HeaderProviderVal: "prov"}
				if diff := cmp.Diff(want, g); diff != "" {
					t.Errorf("completion mismatch (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "max_completion_tokens smaller than max_tokens",
			body: `{"model":"m","max_tokens":4,"max_completion_tokens":1,` +
				`"messages":[{"role":"user","content":"hi"}]}`,
			check: func(t *testing.T, g gotCompletion) {
				if g.Words != 1 || g.FinishReason != "length" {
					t.Errorf("words, finish = %d, %q; want 1, length", g.Words, g.FinishReason)
				}
			},
		},
		{
			name: "large max_tokens does not cut",
			body: `{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`,
			check: func(t *testing.T, g gotCompletion) {
				if g.FinishReason != "stop" {
					t.Errorf("finish_reason = %q, want stop", g.FinishReason)
				}
			},
		},
		{
			name: "tool call",
			body: `{"model":"m","messages":[{"role":"user","content":"please call_tool now"}],` +
				`"tools":[{"type":"function","function":{"name":"lookup","parameters":{}}}]}`,
			check: func(t *testing.T, g gotCompletion) {
				if g.ToolName != "lookup" || g.FinishReason != "tool_calls" || g.Words != 0 {
					t.Errorf("tool, finish, words = %q, %q, %d; want lookup, tool_calls, 0",
						g.ToolName, g.FinishReason, g.Words)
				}
			},
		},
		{
			name: "call_tool without tools answers text",
			body: `{"model":"m","messages":[{"role":"user","content":"call_tool"}]}`,
			check: func(t *testing.T, g gotCompletion) {
				if g.ToolName != "" || g.FinishReason != "stop" {
					t.Errorf("tool, finish = %q, %q; want none, stop", g.ToolName, g.FinishReason)
				}
			},
		},
		{
			name:     "omit usage",
			body:     `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			behavior: Behavior{OmitUsage: true},
			check: func(t *testing.T, g gotCompletion) {
				if g.HasUsage {
					t.Errorf("usage present with OmitUsage")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{Name: "prov", Behavior: tt.behavior})
			rec := post(t, s, "/v1/chat/completions", tt.body, nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d, want 200; body %s", rec.Code, rec.Body)
			}
			tt.check(t, summarize(t, rec))
		})
	}
}

func TestBadRequests(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		body      string
		wantParam any
	}{
		{"malformed json", "/v1/chat/completions", `{"model":`, nil},
		{"missing model", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`,
			"model"},
		{"missing messages", "/v1/chat/completions", `{"model":"m"}`, "messages"},
		{"empty messages", "/v1/chat/completions", `{"model":"m","messages":[]}`, "messages"},
		{"no role", "/v1/chat/completions", `{"model":"m","messages":[{"content":"x"}]}`,
			"messages[0].role"},
		{"numeric content", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"user","content":7}]}`, "messages[0].content"},
		{"zero max_tokens", "/v1/chat/completions",
			`{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`,
			"max_tokens"},
		{"embeddings no model", "/v1/embeddings", `{"input":"x"}`, "model"},
		{"embeddings empty input", "/v1/embeddings", `{"model":"e","input":[]}`, "input"},
		{"embeddings object input", "/v1/embeddings", `{"model":"e","input":{}}`, "input"},
		{"embeddings bad dims", "/v1/embeddings", `{"model":"e","input":"x","dimensions":0}`,
			"dimensions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{})
			rec := post(t, s, tt.path, tt.body, nil)
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400", rec.Code)
			}
			got := decode[map[string]map[string]any](t, rec)["error"]
			if got["type"] != "invalid_request_error" || got["message"] == "" {
				t.Errorf("error = %v, want invalid_request_error with a message", got)
			}
			if diff := cmp.Diff(tt.wantParam, got["param"]); diff != "" {
				t.Errorf("param mismatch (-want +got):\n%s", diff)
			}
			if _, ok := got["code"]; !ok {
				t.Errorf("error has no code field: %v", got)
			}
			if s.Calls() != 1 {
				t.Errorf("Calls() = %d, want 1", s.Calls())
			}
		})
	}
}

func TestDeterminism(t *testing.T) {
	s1 := New(Options{Name: "a"})
	s2 := New(Options{Name: "a"})
	body := `{"model":"m","messages":[{"role":"user","content":"what is the weather"}]}`
	first := post(t, s1, "/v1/chat/completions", body, nil).Body.String()
	again := post(t, s1, "/v1/chat/completions", body, nil).Body.String()
	other := post(t, s2, "/openai/v1/chat/completions", body, nil).Body.String()
	if first != again || first != other {
		t.Errorf("same request gave different answers:\n%s\n%s\n%s", first, again, other)
	}

	contents := make(map[string]string)
	for _, in := range []string{
		`{"model":"m","messages":[{"role":"user","content":"what is the weather"}]}`,
		`{"model":"m2","messages":[{"role":"user","content":"what is the weather"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"what is the time"}]}`,
		`{"model":"m","messages":[{"role":"system","content":"what is the weather"}]}`,
	} {
		c := decode[completion](t, post(t, s1, "/v1/chat/completions", in, nil))
		if prev, ok := contents[c.ID]; ok {
			t.Errorf("requests %s and %s share id %s", prev, in, c.ID)
		}
		contents[c.ID] = in
	}
}

func TestPaths(t *testing.T) {
	s := New(Options{})
	body := `{"model":"m","messages":[{"role":"user","content":"x"}]}`
	for _, p := range []string{"/v1/chat/completions", "/openai/v1/chat/completions",
		"/v1/chat/completions"} {
		if rec := post(t, s, p, body, nil); rec.Code != http.StatusOK {
			t.Errorf("POST %s = %d, want 200", p, rec.Code)
		}
	}
	if rec := post(t, s, "/v1/embeddings", `{"model":"e","input":"x"}`, nil); rec.Code != 200 {
		t.Errorf("POST /v1/embeddings = %d, want 200", rec.Code)
	}
	if rec := post(t, s, "/v1/completions", body, nil); rec.Code != http.StatusNotFound {
		t.Errorf("POST /v1/completions = %d, want 404", rec.Code)
	}
	req := httptest.NewRequestWithContext(testContext(t), http.MethodGet, "/v1/chat/completions",
		nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/chat/completions = %d, want 405", rec.Code)
	}

	want := map[string]int64{
		"/v1/chat/completions": 2, "/openai/v1/chat/completions": 1, "/v1/embeddings": 1,
	}
	if diff := cmp.Diff(want, s.CallsByPath()); diff != "" {
		t.Errorf("CallsByPath() mismatch (-want +got):\n%s", diff)
	}
	if s.Calls() != 4 {
		t.Errorf("Calls() = %d, want 4", s.Calls())
	}
}

func TestHeaderInjection(t *testing.T) {
	tests := []struct {
		header         string
		wantCode       int
		wantType       string
		wantRetryAfter string
	}{
		{"500", 500, "server_error", ""},
		{"503", 503, "server_error", ""},
		{"429", 429, "rate_limit_error", "1"},
		{"nope", 400, "invalid_request_error", ""},
		{"200", 400, "invalid_request_error", ""},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			s := New(Options{Name: "p"})
			rec := post(t, s, "/v1/chat/completions",
				`{"model":"m","messages":[{"role":"user","content":"x"}]}`,
				map[string]string{HeaderStatus: tt.header})
			if rec.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d", rec.Code, tt.wantCode)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetryAfter)
			}
			if got := rec.Header().Get(HeaderProvider); got != "p" {
				t.Errorf("%s = %q, want p", HeaderProvider, got)
			}
			e := decode[apiError](t, rec)
			if e.Error.Type != tt.wantType {
				t.Errorf("error type = %q, want %q", e.Error.Type, tt.wantType)
			}
			if s.Calls() != 1 {
				t.Errorf("Calls() = %d, want 1", s.Calls())
			}
		})
	}
}

func TestRateSequences(t *testing.T) {
	tests := []struct {
		name     string
		behavior Behavior
		want     []int
	}{
		{"none", Behavior{}, []int{200, 200, 200, 200}},
		{"half errors", Behavior{ErrorRate: 0.5}, []int{200, 500, 200, 500}},
		{"all errors", Behavior{ErrorRate: 1}, []int{500, 500, 500, 500}},
		{"third limited", Behavior{RateLimitRate: 1.0 / 3}, []int{200, 200, 429, 200, 200, 429}},
		{"both", Behavior{ErrorRate: 0.5, RateLimitRate: 0.25},
			[]int{200, 500, 200, 500, 429, 500, 200, 500}},
		{"clamped", Behavior{ErrorRate: 7}, []int{500, 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{})
			s.SetBehavior(tt.behavior)
			var got []int
			for i := range tt.want {
				path := "/v1/chat/completions"
				body := `{"model":"m","messages":[{"role":"user","content":"x"}]}`
				if i%2 == 1 {
					path, body = "/v1/embeddings", `{"model":"e","input":"x"}`
				}
				rec := post(t, s, path, body, nil)
				got = append(got, rec.Code)
				if rec.Code == 429 && rec.Header().Get("Retry-After") != "1" {
					t.Errorf("429 without Retry-After: 1")
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("statuses mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// sseEvents reads "data:" events from an event stream and checks the framing: every event
// is a single "data: " line followed by a blank line.
func sseEvents(t *testing.T, body string) []string {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(strings.NewReader(body))
	expectBlank := false
	for sc.Scan() {
		line := sc.Text()
		if expectBlank {
			if line != "" {
				t.Fatalf("line %q after an event, want a blank line", line)
			}
			expectBlank = false
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("line %q, want a data: line", line)
		}
		events = append(events, data)
		expectBlank = true
	}
	if expectBlank || !strings.HasSuffix(body, "\n\n") {
		t.Fatalf("stream does not end with a blank line: %q", body)
	}
	return events
}

func TestStream(t *testing.T) {
	const prompt = `"messages":[{"role":"user","content":"tell me a story"}]`
	tests := []struct {
		name         string
		body         string
		behavior     Behavior
		wantUsage    bool
		wantFinish   string
		wantMaxWords int
	}{
		{"no usage", `{"model":"m","stream":true,` + prompt + `}`, Behavior{}, false, "stop", 0},
		{"include usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true},` +
			prompt + `}`, Behavior{}, true, "stop", 0},
		{"usage omitted", `{"model":"m","stream":true,"stream_options":{"include_usage":true},` +
			prompt + `}`, Behavior{OmitUsage: true}, false, "stop", 0},
		{"length", `{"model":"m","stream":true,"max_tokens":3,"stream_options":` +
			`{"include_usage":true},` + prompt + `}`, Behavior{}, true, "length", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{Name: "sp", Behavior: tt.behavior})
			rec := post(t, s, "/v1/chat/completions", tt.body, nil)
			if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("Content-Type = %q, want text/event-stream", ct)
			}
			events := sseEvents(t, rec.Body.String())
			if n := len(events); n < 4 || events[n-1] != "[DONE]" {
				t.Fatalf("events = %q, want role, words, finish, [DONE]", events)
			}
			events = events[:len(events)-1]

			var chunks []chunk
			for _, e := range events {
				var c chunk
				if err := json.Unmarshal([]byte(e), &c); err != nil {
					t.Fatalf("chunk %q: %v", e, err)
				}
				if c.Object != "chat.completion.chunk" || c.Model != "m" ||
					c.SystemFingerprint != "sp" {
					t.Errorf("chunk header = %q %q %q", c.Object, c.Model, c.SystemFingerprint)
				}
				chunks = append(chunks, c)
			}
			if chunks[0].Choices[0].Delta.Role != "assistant" {
				t.Errorf("first chunk delta = %+v, want role assistant", chunks[0].Choices[0].Delta)
			}

			var usageChunk *chunk
			if last := chunks[len(chunks)-1]; len(last.Choices) == 0 {
				usageChunk = &last
				chunks = chunks[:len(chunks)-1]
			}
			if (usageChunk != nil) != tt.wantUsage {
				t.Fatalf("usage chunk present = %v, want %v", usageChunk != nil, tt.wantUsage)
			}
			fin := chunks[len(chunks)-1].Choices[0].FinishReason
			if fin == nil || *fin != tt.wantFinish {
				t.Errorf("finish_reason = %v, want %q", fin, tt.wantFinish)
			}

			var content strings.Builder
			for _, c := range chunks[1 : len(chunks)-1] {
				if c.Choices[0].FinishReason != nil || c.Choices[0].Delta.Content == nil {
					t.Fatalf("word chunk = %+v", c.Choices[0])
				}
				content.WriteString(*c.Choices[0].Delta.Content)
			}

			// The stream carries the same answer as the non-stream call.
			plain := strings.Replace(tt.body, `"stream":true`, `"stream":false`, 1)
			want := decode[completion](t, post(t, s, "/v1/chat/completions", plain, nil))
			if got := content.String(); got != *want.Choices[0].Message.Content {
				t.Errorf("streamed content = %q, want %q", got, *want.Choices[0].Message.Content)
			}
			if n := len(chunks) - 2; tt.wantMaxWords > 0 && n != tt.wantMaxWords {
				t.Errorf("word chunks = %d, want %d", n, tt.wantMaxWords)
			}
			if usageChunk != nil {
				var u usage
				if err := json.Unmarshal(usageChunk.Usage, &u); err != nil {
					t.Fatalf("usage %s: %v", usageChunk.Usage, err)
				}
				if diff := cmp.Diff(*want.Usage, u); diff != "" {
					t.Errorf("stream usage mismatch (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestStreamToolCall(t *testing.T) {
	s := New(Options{})
	rec := post(t, s, "/v1/chat/completions", `{"model":"m","stream":true,`+
		`"messages":[{"role":"user","content":"call_tool please"}],`+
		`"tools":[{"type":"function","function":{"name":"f"}}]}`, nil)
	events := sseEvents(t, rec.Body.String())
	var args strings.Builder
	var name, finish string
	for _, e := range events[:len(events)-1] {
		var c chunk
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatal(err)
		}
		for _, tc := range c.Choices[0].Delta.ToolCalls {
			name += tc.Function.Name
			args.WriteString(tc.Function.Arguments)
		}
		if f := c.Choices[0].FinishReason; f != nil {
			finish = *f
		}
	}
	var parsed map[string]string
	if err := json.Unmarshal([]byte(args.String()), &parsed); err != nil || parsed["query"] == "" {
		t.Errorf("arguments %q are not {\"query\":...}: %v", args.String(), err)
	}
	if name != "f" || finish != "tool_calls" {
		t.Errorf("name, finish = %q, %q; want f, tool_calls", name, finish)
	}
}

// flushSignal is a ResponseWriter that reports each flush, so a test can act after the first
// chunk has been written.
type flushSignal struct {
	*httptest.ResponseRecorder
	flushed chan struct{}
}

func (f *flushSignal) Flush() {
	select {
	case f.flushed <- struct{}{}:
	default:
	}
}

func TestClientGoneEndsHandler(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"stream", `{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`},
		{"non-stream", `{"model":"m","messages":[{"role":"user","content":"x"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One word per hour: the handler can only end early by noticing the client left.
			s := New(Options{Behavior: Behavior{TokensPerSecond: 1.0 / 3600}})
			ctx, cancel := context.WithCancel(testContext(t))
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/chat/completions",
				strings.NewReader(tt.body))
			w := &flushSignal{ResponseRecorder: httptest.NewRecorder(),
				flushed: make(chan struct{}, 1)}
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.ServeHTTP(w, req)
			}()
			if strings.Contains(tt.body, `"stream":true`) {
				select {
				case <-w.flushed:
				case <-done:
					t.Fatal("handler returned before the first chunk")
				}
			}
			cancel()
			select {
			case <-done:
			case <-testContext(t).Done():
				t.Fatal("handler did not return after the client went away")
			}
		})
	}
}

func TestEmbeddings(t *testing.T) {
	s := New(Options{Name: "emb"})
	vec := func(input string) []float32 {
		t.Helper()
		rec := post(t, s, "/v1/embeddings", `{"model":"e","input":`+input+`}`, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("status = %d: %s", rec.Code, rec.Body)
		}
		r := decode[struct {
			Data []struct {
				Embedding []float32
			}
		}](t, rec)
		return r.Data[0].Embedding
	}
	cos := func(a, b []float32) float64 {
		var d float64
		for i := range a {
			d += float64(a[i]) * float64(b[i])
		}
		return d
	}

	a := vec(`"the quick brown fox"`)
	if len(a) != defaultDims {
		t.Fatalf("dims = %d, want %d", len(a), defaultDims)
	}
	if n := cos(a, a); math.Abs(n-1) > 1e-5 {
		t.Errorf("|v|^2 = %v, want 1", n)
	}
	if diff := cmp.Diff(a, vec(`"The quick, brown fox!"`)); diff != "" {
		t.Errorf("same words gave different vectors (-want +got):\n%s", diff)
	}
	similar, unrelated := cos(a, vec(`"the quick brown dog"`)), cos(a, vec(`"zebra piano"`))
	if similar <= unrelated {
		t.Errorf("cos(shared words) = %v <= cos(unrelated) = %v", similar, unrelated)
	}
	if got := vec(`"   "`); got[0] != 1 {
		t.Errorf("vector of blank text = %v, want first unit vector", got)
	}

	rec := post(t, s, "/v1/embeddings",
		`{"model":"e","input":["a b","c"],"dimensions":8,"encoding_format":"base64"}`, nil)
	r := decode[embeddingResponse](t, rec)
	if len(r.Data) != 2 || r.Model != "e" || r.Usage.PromptTokens != 3 {
		t.Errorf("response = %+v, want 2 items, model e, 3 prompt tokens", r)
	}
	if b, ok := r.Data[1].Embedding.(string); !ok || len(b) != 44 {
		t.Errorf("base64 embedding = %v, want 44 characters for 8 float32", r.Data[1].Embedding)
	}

	rec = post(t, s, "/v1/embeddings", `{"model":"e","input":[[1,2,3],[4]]}`, nil)
	if r := decode[embeddingResponse](t, rec); len(r.Data) != 2 || r.Usage.PromptTokens != 4 {
		t.Errorf("token input response = %+v, want 2 items and 4 tokens", r)
	}
}

func TestControlEndpoints(t *testing.T) {
	s := New(Options{Name: "ctl"})
	post(t, s, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"x"}]}`,
		nil)

	rec := post(t, s, behaviorPath, `{"ttft":"150ms","tokens_per_second":20,"error_rate":1}`, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("POST %s = %d: %s", behaviorPath, rec.Code, rec.Body)
	}
	want := Behavior{TTFT: 150 * time.Millisecond, TokensPerSecond: 20, ErrorRate: 1}
	if diff := cmp.Diff(want, s.Behavior()); diff != "" {
		t.Errorf("Behavior() mismatch (-want +got):\n%s", diff)
	}
	if rec := post(t, s, "/v1/embeddings", `{"model":"e","input":"x"}`, nil); rec.Code != 500 {
		t.Errorf("call after error_rate 1 = %d, want 500", rec.Code)
	}

	for _, bad := range []string{`{"ttft":"soon"}`, `{"error_rate":2}`, `{"ttft":"-1s"}`,
		`{"unknown":1}`, `[`} {
		if rec := post(t, s, behaviorPath, bad, nil); rec.Code != http.StatusBadRequest {
			t.Errorf("POST %s %s = %d, want 400", behaviorPath, bad, rec.Code)
		}
	}

	req := httptest.NewRequestWithContext(testContext(t), http.MethodGet, statsPath, nil)
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	got := decode[stats](t, rec)
	wantStats := stats{Name: "ctl", Calls: 2,
		ByPath: map[string]int64{"/v1/chat/completions": 1, "/v1/embeddings": 1}}
	if diff := cmp.Diff(wantStats, got); diff != "" {
		t.Errorf("stats mismatch (-want +got):\n%s", diff)
	}
}

func TestListen(t *testing.T) {
	ctx, cancel := context.WithCancel(testContext(t))
	s := New(Options{Name: "l"})
	r, err := Listen(ctx, "127.0.0.1:0", s)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(testContext(t), http.MethodGet,
		"http://"+r.Addr()+statsPath, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET stats: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderProvider) != "l" {
		t.Errorf("GET stats = %d %q, want 200 l", resp.StatusCode, resp.Header.Get(HeaderProvider))
	}

	// Cancelling ctx stops the server; Close afterwards is harmless.
	cancel()
	if err := r.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Errorf("request after Close succeeded")
	}
}
