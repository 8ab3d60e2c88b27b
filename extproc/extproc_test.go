package extproc

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	v3procfilterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/internal/routeheaders"
)

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"SECRET PROMPT"}]}`

type openaiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// headers returns the set headers of a mutation as key → raw_value, failing on any entry that
// uses value instead of raw_value.
func headers(t *testing.T, hm *v3procservicepb.HeaderMutation) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range hm.GetSetHeaders() {
		if h.GetHeader().GetValue() != "" {
			t.Errorf("header %q set in value, want raw_value only", h.GetHeader().GetKey())
		}
		out[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
	}
	return out
}

func TestErrors(t *testing.T) {
	long := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` +
		strings.Repeat("x", 5000) + `"}]}`
	tests := []struct {
		name       string
		headers    *v3procservicepb.ProcessingRequest
		body       string // sent when not empty
		wantStatus int
		wantType   string
		wantParam  string
		wantCode   string
	}{
		{
			name: "GET chat",
			headers: requestHeaders(true, ":method", "GET", ":path", "/v1/chat/completions",
				"x-request-id", "req-123"),
			wantStatus: 405, wantType: "invalid_request_error", wantCode: "method_not_allowed",
		},
		{
			name:       "POST models",
			headers:    requestHeaders(false, ":method", "POST", ":path", "/v1/models", "x-request-id", "req-123"),
			wantStatus: 405, wantType: "invalid_request_error", wantCode: "method_not_allowed",
		},
		{
			name: "no body",
			headers: requestHeaders(true, ":method", "POST", ":path", "/v1/chat/completions",
				"x-request-id", "req-123"),
			wantStatus: 400, wantType: "invalid_request_error",
		},
		{
			name: "too large", headers: postHeaders("/v1/chat/completions", len(long)), body: long,
			wantStatus: 413, wantType: "invalid_request_error", wantCode: "request_too_large",
		},
		{
			name: "malformed", headers: postHeaders("/v1/chat/completions", 9), body: `{"model":`,
			wantStatus: 400, wantType: "invalid_request_error",
		},
		{
			name: "missing model", headers: postHeaders("/v1/chat/completions", 1),
			body:       `{"messages":[{"role":"user","content":"hi"}]}`,
			wantStatus: 400, wantType: "invalid_request_error", wantParam: "model",
		},
		{
			name: "missing messages", headers: postHeaders("/v1/chat/completions", 1),
			body:       `{"model":"gpt-4o-mini"}`,
			wantStatus: 400, wantType: "invalid_request_error", wantParam: "messages",
		},
		{
			name: "missing input", headers: postHeaders("/v1/embeddings", 1),
			body:       `{"model":"text-embedding-3-small"}`,
			wantStatus: 400, wantType: "invalid_request_error", wantParam: "input",
		},
		{
			name: "unknown model", headers: postHeaders("/v1/chat/completions", 1),
			body:       `{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`,
			wantStatus: 404, wantType: "invalid_request_error", wantParam: "model", wantCode: "model_not_found",
		},
		{
			name: "embedding model on chat", headers: postHeaders("/v1/chat/completions", 1),
			body:       `{"model":"text-embedding-3-small","messages":[{"role":"user","content":"hi"}]}`,
			wantStatus: 400, wantType: "invalid_request_error", wantParam: "model", wantCode: "model_not_supported",
		},
		{
			name: "chat model on embeddings", headers: postHeaders("/v1/embeddings", 1),
			body:       `{"model":"gpt-4o","input":"hi"}`,
			wantStatus: 400, wantType: "invalid_request_error", wantParam: "model", wantCode: "model_not_supported",
		},
	}
	env := newTestEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := env.open(t)
			resp := es.roundTrip(tt.headers)
			if tt.body != "" {
				if resp.GetRequestHeaders() == nil {
					t.Fatalf("headers reply = %v, want a HeadersResponse", resp)
				}
				resp = es.roundTrip(requestBody(tt.body))
			}
			ir := resp.GetImmediateResponse()
			if ir == nil {
				t.Fatalf("reply = %v, want an ImmediateResponse", resp)
			}
			if got := int(ir.GetStatus().GetCode()); got != tt.wantStatus {
				t.Errorf("status = %d, want %d", got, tt.wantStatus)
			}
			if err := ir.Validate(); err != nil {
				t.Errorf("ImmediateResponse.Validate() = %v", err)
			}
			h := headers(t, ir.GetHeaders())
			if h["content-type"] != "application/json" || h["x-request-id"] != "req-123" {
				t.Errorf("immediate headers = %v, want JSON content-type and request id", h)
			}
			var oe openaiError
			if err := json.Unmarshal(ir.GetBody(), &oe); err != nil {
				t.Fatalf("body %s: %v", ir.GetBody(), err)
			}
			got := []string{oe.Error.Type, deref(oe.Error.Param), deref(oe.Error.Code)}
			want := []string{tt.wantType, tt.wantParam, tt.wantCode}
			if diff := cmp.Diff(want, got); diff != "" || oe.Error.Message == "" {
				t.Errorf("error body %s (-want +got):\n%s", ir.GetBody(), diff)
			}
			if _, err := es.stream.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("Recv() after immediate response = %v, want EOF", err)
			}
		})
	}

	if got := testutil.ToFloat64(env.srv.metrics.requests.WithLabelValues("chat", "unknown", "404")); got != 1 {
		t.Errorf("requests_total{chat,unknown,404} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(env.srv.metrics.requests.WithLabelValues("chat", "unknown", "413")); got != 1 {
		t.Errorf("requests_total{chat,unknown,413} = %v, want 1", got)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestModelsList(t *testing.T) {
	env := newTestEnv(t)
	es := env.open(t)
	resp := es.roundTrip(requestHeaders(true, ":method", "GET", ":path", "/v1/models?x=1"))
	ir := resp.GetImmediateResponse()
	if ir.GetStatus().GetCode() != 200 {
		t.Fatalf("reply = %v, want 200 immediate response", resp)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal(ir.GetBody(), &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Data {
		if m.Object != "model" {
			t.Errorf("model %q object = %q, want model", m.ID, m.Object)
		}
		ids = append(ids, m.ID)
	}
	want := []string{"gpt-4o-mini", "gpt-4o", "llama", "text-embedding-3-small"}
	if diff := cmp.Diff(want, ids); diff != "" || list.Object != "list" {
		t.Errorf("models (-want +got):\n%s", diff)
	}
}

func TestRouting(t *testing.T) {
	// The listener filter names the model and removes the client's credential and routing
	// headers; provider rewrites happen per upstream attempt (TestUpstreamAttempt).
	remove := []string{"authorization", routeheaders.Provider}
	tests := []struct {
		name     string
		path     string
		body     string
		wantSet  map[string]string
		wantBody string // empty: no body mutation
	}{
		{
			name:    "chat",
			path:    "/v1/chat/completions",
			body:    chatBody,
			wantSet: map[string]string{routeheaders.Model: "gpt-4o-mini"},
		},
		{
			name:    "provider names the model differently",
			path:    "/v1/chat/completions",
			body:    `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
			wantSet: map[string]string{routeheaders.Model: "gpt-4o"},
		},
		{
			name:    "stream asks for usage",
			path:    "/v1/chat/completions",
			body:    `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			wantSet: map[string]string{routeheaders.Model: "gpt-4o-mini", "content-length": "121"},
			wantBody: `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}],` +
				`"stream_options":{"include_usage":true}}`,
		},
		{
			name:    "embeddings",
			path:    "/v1/embeddings",
			body:    `{"model":"text-embedding-3-small","input":"hi"}`,
			wantSet: map[string]string{routeheaders.Model: "text-embedding-3-small"},
		},
	}
	env := newTestEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := env.open(t)
			resp := es.roundTrip(postHeaders(tt.path, len(tt.body)))
			if diff := cmp.Diff(continueRequestHeaders(nil), resp, protocmp.Transform()); diff != "" {
				t.Fatalf("headers reply (-want +got):\n%s", diff)
			}
			resp = es.roundTrip(requestBody(tt.body))
			cr := resp.GetRequestBody().GetResponse()
			if cr == nil {
				t.Fatalf("body reply = %v, want a BodyResponse", resp)
			}
			if !cr.GetClearRouteCache() || cr.GetHeaderMutation() == nil {
				t.Errorf("clear_route_cache = %v with header mutation %v, want both",
					cr.GetClearRouteCache(), cr.GetHeaderMutation())
			}
			checkMutation(t, cr, tt.wantSet, remove, tt.wantBody)
			if err := resp.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
}

// checkMutation compares a reply's header and body mutations with the wanted ones, and
// checks that a content-length it sets matches the new body.
func checkMutation(t *testing.T, cr *v3procservicepb.CommonResponse, wantSet map[string]string,
	wantRemove []string, wantBody string) {
	t.Helper()
	if diff := cmp.Diff(wantSet, headers(t, cr.GetHeaderMutation())); diff != "" {
		t.Errorf("set headers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantRemove, cr.GetHeaderMutation().GetRemoveHeaders()); diff != "" {
		t.Errorf("removed headers (-want +got):\n%s", diff)
	}
	gotBody := string(cr.GetBodyMutation().GetBody())
	if gotBody != wantBody {
		t.Errorf("body mutation = %s, want %s", gotBody, wantBody)
	}
	if cl, ok := headers(t, cr.GetHeaderMutation())["content-length"]; ok && cl != strconv.Itoa(len(gotBody)) {
		t.Errorf("content-length = %s, body is %d bytes", cl, len(gotBody))
	}
}

func TestPassthrough(t *testing.T) {
	env := newTestEnv(t)
	es := env.open(t)
	resp := es.roundTrip(requestHeaders(false, ":method", "POST", ":path", "/v1/audio/speech",
		routeheaders.Provider, "openai"))
	want := &v3procservicepb.ProcessingResponse{
		Response: &v3procservicepb.ProcessingResponse_RequestHeaders{
			RequestHeaders: &v3procservicepb.HeadersResponse{Response: &v3procservicepb.CommonResponse{
				HeaderMutation: &v3procservicepb.HeaderMutation{
					RemoveHeaders: []string{routeheaders.Provider, routeheaders.Model},
				},
				ClearRouteCache: true,
			}},
		},
		ModeOverride: &v3procfilterpb.ProcessingMode{
			ResponseHeaderMode: v3procfilterpb.ProcessingMode_SKIP,
			RequestBodyMode:    v3procfilterpb.ProcessingMode_NONE,
			ResponseBodyMode:   v3procfilterpb.ProcessingMode_NONE,
		},
	}
	if diff := cmp.Diff(want, resp, protocmp.Transform()); diff != "" {
		t.Errorf("passthrough reply (-want +got):\n%s", diff)
	}
	if _, err := es.stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv() after passthrough = %v, want EOF", err)
	}
}

// routeChat drives a request up to the body reply.
func driveChat(t *testing.T, es *envoyStream, body string) {
	t.Helper()
	es.roundTrip(postHeaders("/v1/chat/completions", len(body)))
	if resp := es.roundTrip(requestBody(body)); resp.GetRequestBody() == nil {
		t.Fatalf("body reply = %v, want a BodyResponse", resp)
	}
}

func TestSSEUsage(t *testing.T) {
	env := newTestEnv(t)
	es := env.open(t)
	driveChat(t, es, `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"SECRET PROMPT"}]}`)

	resp := es.roundTrip(responseHeaders("200", "text/event-stream; charset=utf-8"))
	wantHeaders := map[string]string{routeheaders.Model: "gpt-4o-mini", "x-request-id": "req-123"}
	got := headers(t, resp.GetResponseHeaders().GetResponse().GetHeaderMutation())
	if diff := cmp.Diff(wantHeaders, got); diff != "" {
		t.Errorf("response header mutation (-want +got):\n%s", diff)
	}
	wantMode := bodyModes(v3procfilterpb.ProcessingMode_BUFFERED, v3procfilterpb.ProcessingMode_STREAMED)
	if diff := cmp.Diff(wantMode, resp.GetModeOverride(), protocmp.Transform()); diff != "" {
		t.Errorf("mode_override (-want +got):\n%s", diff)
	}

	stream := `data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"SECRET ANSWER"}}]}` +
		"\r\n\r\n" + ": keepalive\n\n" +
		`data: {"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":11,` +
		`"completion_tokens":7,"total_tokens":18}}` + "\n\n" + "data: [DONE]\n\n"
	// Pipeline every chunk first, as Envoy does in STREAMED mode, then read the replies.
	var chunks []string
	for i := 0; i < len(stream); i += 13 {
		chunks = append(chunks, stream[i:min(i+13, len(stream))])
	}
	for i, c := range chunks {
		if err := es.stream.Send(responseBody(c, i == len(chunks)-1)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range chunks {
		resp, err := es.stream.Recv()
		if err != nil {
			t.Fatalf("Recv() for chunk %d = %v", i, err)
		}
		if diff := cmp.Diff(emptyResponseBody(), resp, protocmp.Transform()); diff != "" {
			t.Fatalf("reply to chunk %d (-want +got):\n%s", i, diff)
		}
	}
	if _, err := es.stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv() after last chunk = %v, want EOF", err)
	}

	checkCounter(t, env, "input", 11)
	checkCounter(t, env, "output", 7)
	if got := testutil.ToFloat64(env.srv.metrics.requests.WithLabelValues("chat", "gpt-4o-mini", "200")); got != 1 {
		t.Errorf("requests_total{chat,gpt-4o-mini,200} = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(env.srv.metrics.requestDuration); got != 1 {
		t.Errorf("request_duration_seconds series = %d, want 1", got)
	}
}

func checkCounter(t *testing.T, env *testEnv, direction string, want float64) {
	t.Helper()
	if got := testutil.ToFloat64(env.srv.metrics.tokens.WithLabelValues("gpt-4o-mini", direction)); got != want {
		t.Errorf("tokens_total{gpt-4o-mini,%s} = %v, want %v", direction, got, want)
	}
}

func TestJSONUsage(t *testing.T) {
	env := newTestEnv(t)
	es := env.open(t)
	driveChat(t, es, chatBody)
	resp := es.roundTrip(responseHeaders("200", "application/json"))
	if resp.GetModeOverride() != nil {
		t.Errorf("mode_override = %v for JSON chat, want none (stay BUFFERED)", resp.GetModeOverride())
	}
	resp = es.roundTrip(responseBody(`{"object":"chat.completion","choices":[{"message":`+
		`{"role":"assistant","content":"SECRET ANSWER"}}],"usage":{"prompt_tokens":20,`+
		`"completion_tokens":5,"total_tokens":25}}`, true))
	if diff := cmp.Diff(emptyResponseBody(), resp, protocmp.Transform()); diff != "" {
		t.Errorf("body reply (-want +got):\n%s", diff)
	}
	if _, err := es.stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv() = %v, want EOF", err)
	}
	checkCounter(t, env, "input", 20)
	checkCounter(t, env, "output", 5)
}

func TestEmbeddingsTail(t *testing.T) {
	env := newTestEnv(t)
	es := env.open(t)
	body := `{"model":"text-embedding-3-small","input":["a","b"]}`
	es.roundTrip(postHeaders("/v1/embeddings", len(body)))
	es.roundTrip(requestBody(body))
	resp := es.roundTrip(responseHeaders("200", "application/json"))
	wantMode := bodyModes(v3procfilterpb.ProcessingMode_BUFFERED, v3procfilterpb.ProcessingMode_STREAMED)
	if diff := cmp.Diff(wantMode, resp.GetModeOverride(), protocmp.Transform()); diff != "" {
		t.Errorf("mode_override (-want +got):\n%s", diff)
	}
	vec := strings.Repeat("0.0123,", 20000)
	answer := `{"object":"list","data":[{"embedding":[` + vec + `0]},{"embedding":[` + vec +
		`0]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":2,"total_tokens":2}}`
	const chunk = 64 << 10
	for i := 0; i < len(answer); i += chunk {
		end := min(i+chunk, len(answer))
		es.roundTrip(responseBody(answer[i:end], end == len(answer)))
	}
	got := testutil.ToFloat64(env.srv.metrics.tokens.WithLabelValues("text-embedding-3-small", "input"))
	if got != 2 {
		t.Errorf("tokens_total{text-embedding-3-small,input} = %v, want 2", got)
	}
}

func TestLogs(t *testing.T) {
	env := newTestEnv(t)
	es := env.open(t)
	driveChat(t, es, chatBody)
	es.roundTrip(responseHeaders("200", "application/json"))
	es.roundTrip(responseBody(`{"choices":[{"message":{"content":"SECRET ANSWER"}}],`+
		`"usage":{"prompt_tokens":1,"completion_tokens":1}}`, true))
	if _, err := es.stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv() = %v, want EOF", err)
	}

	// The stream's goroutine may still be logging its last line: GracefulStop waits for it.
	logs := env.logs.String()
	if !strings.Contains(logs, `"msg":"request done"`) {
		t.Fatalf("logs lack the request done line:\n%s", logs)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["request_id"] != "req-123" || rec["component"] != "extproc" {
			t.Errorf("log line %s lacks request_id req-123 or component", line)
		}
	}
	for _, secret := range []string{"SECRET", testOpenAIKey, "client-secret"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain %q:\n%s", secret, logs)
		}
	}
}

func TestStreamEndsOnCancel(t *testing.T) {
	env := newTestEnv(t)
	es := env.open(t)
	es.roundTrip(postHeaders("/v1/chat/completions", 10))
	if got := testutil.ToFloat64(env.srv.metrics.streamsActive); got != 1 {
		t.Errorf("streams_active = %v, want 1", got)
	}
	es.cancel()

	// GracefulStop returns once every handler has returned.
	stopped := make(chan struct{})
	go func() {
		env.g.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(defaultTestTimeout):
		t.Fatal("GracefulStop still waiting for a cancelled stream")
	}
	if got := testutil.ToFloat64(env.srv.metrics.streamsActive); got != 0 {
		t.Errorf("streams_active = %v after cancel, want 0", got)
	}
	if got := testutil.ToFloat64(env.srv.metrics.requests.WithLabelValues("chat", "unknown", "aborted")); got != 1 {
		t.Errorf("requests_total{chat,unknown,aborted} = %v, want 1", got)
	}
}

func TestHandleNeverPanics(t *testing.T) {
	env := newTestEnv(t)
	// Messages out of order, empty and odd: each gets a reply or an error, never a panic.
	msgs := []*v3procservicepb.ProcessingRequest{
		{},
		responseBody("data: x\n\n", false),
		requestBody(chatBody),
		responseHeaders("abc", ""),
		requestHeaders(false),
		requestHeaders(false, ":method", "POST", ":path", "/v1/chat/completions"),
		requestBody(""),
		{Request: &v3procservicepb.ProcessingRequest_ResponseTrailers{}},
	}
	for _, m := range msgs {
		st := env.srv.newStream()
		for _, m2 := range msgs {
			_, _ = st.handle(t.Context(), proto.Clone(m).(*v3procservicepb.ProcessingRequest))
			_, _ = st.handle(t.Context(), m2)
		}
		st.finish()
	}
}

func FuzzHandle(f *testing.F) {
	seed := []*v3procservicepb.ProcessingRequest{
		postHeaders("/v1/chat/completions", 10), requestBody(chatBody),
		responseHeaders("200", "text/event-stream"), responseBody("data: {}\n\n", true),
		responseHeaders("200", "application/json"),
		requestHeaders(true, ":method", "GET", ":path", "/v1/models"),
	}
	for _, a := range seed {
		for _, b := range seed {
			ab, _ := proto.Marshal(a)
			bb, _ := proto.Marshal(b)
			f.Add(ab, bb, []byte(`{"model":"gpt-4o","messages":[{"role":"user"}],"stream":true}`))
		}
	}
	cfg := testConfigParsed(f)
	// With a cache, so that hits, stores and reassembly are fuzzed too. Collapsing is off:
	// streams left unfinished would make later ones wait.
	c, err := cache.New(cache.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(c.Close)
	srv, err := New(Options{Config: cfg, Registerer: newRegistry(), Cache: c})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, a, b, body []byte) {
		st := srv.newStream()
		for _, raw := range [][]byte{a, b} {
			var req v3procservicepb.ProcessingRequest
			if proto.Unmarshal(raw, &req) != nil {
				continue
			}
			_, _ = st.handle(t.Context(), &req)
		}
		// Then a plausible request with the fuzzed body, and the fuzzed body as an answer.
		st = srv.newStream()
		for _, req := range []*v3procservicepb.ProcessingRequest{
			postHeaders("/v1/chat/completions", len(body)), requestBody(string(body)),
			responseHeaders("200", "text/event-stream"), responseBody(string(body), false),
			responseBody(string(body), true),
		} {
			resp, err := st.handle(t.Context(), req)
			if err != nil {
				t.Fatalf("handle(%T) = %v", req.GetRequest(), err)
			}
			if err := resp.Validate(); err != nil {
				t.Fatalf("reply %v fails Validate: %v", resp, err)
			}
		}
		st.finish()
	})
}

// With trusted-header identity the user id header stays with the gateway.
func TestRoutingRemovesTrustedUserHeader(t *testing.T) {
	cfg := testConfigParsed(t)
	cfg.Ledger.Identity.Mode, cfg.Ledger.Identity.Header = config.IdentityTrustedHeader, "X-Phochat-User-Id"
	env := newTestEnvOpts(t, slog.LevelWarn, Options{Config: cfg})
	es := env.open(t)
	es.roundTrip(postHeaders("/v1/chat/completions", len(chatBody)))
	cr := es.roundTrip(requestBody(chatBody)).GetRequestBody().GetResponse()
	want := []string{"authorization", routeheaders.Provider, "x-phochat-user-id"}
	if diff := cmp.Diff(want, cr.GetHeaderMutation().GetRemoveHeaders()); diff != "" {
		t.Errorf("removed headers (-want +got):\n%s", diff)
	}
}
