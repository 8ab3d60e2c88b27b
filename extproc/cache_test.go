package extproc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/internal/routeheaders"
)

// cachedJSON is a complete JSON answer, and cachedSSE the same answer streamed.
const (
	cachedJSON = `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,` +
		`"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant",` +
		`"content":"Hanoi is the capital."},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}`
	cachedSSE = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,` +
		`"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` +
		"\n\n" +
		`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,` +
		`"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hanoi is "}}]}` + "\n\n" +
		`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,` +
		`"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"the capital."}}]}` +
		"\n\n" +
		`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,` +
		`"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` +
		"\n\n" +
		`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,` +
		`"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":4,` +
		`"total_tokens":11}}` + "\n\n" +
		"data: [DONE]\n\n"
)

// question returns a chat request body; extra is spliced in as more top-level fields.
func question(q, extra string) string {
	return `{"model":"gpt-4o-mini",` + extra + `"messages":[{"role":"user","content":"` + q + `"}]}`
}

// newCacheEnv starts a server with an exact cache in memory.
func newCacheEnv(t testing.TB) (*testEnv, *cache.Cache) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := cache.New(cache.Options{
		Collapse:     true,
		CollapseWait: defaultTestTimeout,
		Metrics:      cache.NewMetrics(reg),
	})
	if err != nil {
		t.Fatalf("cache.New() = %v", err)
	}
	t.Cleanup(c.Close)
	return newTestEnvOpts(t, slog.LevelDebug, Options{Cache: c, Registerer: reg}), c
}

// chatHeaders are the request headers of a chat request, with extra key-value pairs.
func chatHeaders(bodyLen int, kv ...string) *v3procservicepb.ProcessingRequest {
	base := []string{":method", "POST", ":path", "/v1/chat/completions", ":authority", "gw",
		"x-request-id", "req-123", "content-type", "application/json",
		"content-length", fmt.Sprint(bodyLen)}
	return requestHeaders(false, append(base, kv...)...)
}

// reply sends req and returns its reply, skipping override_message_timeout messages.
func (es *envoyStream) reply(
	req *v3procservicepb.ProcessingRequest) *v3procservicepb.ProcessingResponse {
	es.t.Helper()
	if err := es.stream.Send(req); err != nil {
		es.t.Fatalf("Send() = %v", err)
	}
	for {
		resp, err := es.stream.Recv()
		if err != nil {
			es.t.Fatalf("Recv() = %v", err)
		}
		if resp.GetOverrideMessageTimeout() == nil {
			return resp
		}
	}
}

// expectEOF checks that the server ended the stream.
func (es *envoyStream) expectEOF() {
	es.t.Helper()
	if _, err := es.stream.Recv(); !errors.Is(err, io.EOF) {
		es.t.Errorf("Recv() at the end = %v, want EOF", err)
	}
}

// ask sends a chat request's headers and body and returns the body reply.
func ask(t *testing.T, env *testEnv, body string, kv ...string) (*envoyStream,
	*v3procservicepb.ProcessingResponse) {
	t.Helper()
	es := env.open(t)
	if resp := es.reply(chatHeaders(len(body), kv...)); resp.GetRequestHeaders() == nil {
		t.Fatalf("headers reply = %v, want a HeadersResponse", resp)
	}
	return es, es.reply(requestBody(body))
}

// answer plays the upstream answer of a request that went upstream, in chunks of at most
// 40 bytes for SSE, the last one with end_of_stream set to eos. It returns the response
// header mutation.
func answer(t *testing.T, es *envoyStream, status, contentType, body string,
	eos bool) map[string]string {
	t.Helper()
	resp := es.reply(responseHeaders(status, contentType))
	h := headers(t, resp.GetResponseHeaders().GetResponse().GetHeaderMutation())
	size := len(body)
	if strings.HasPrefix(contentType, "text/event-stream") {
		size = 40
	}
	for i := 0; i < len(body); i += size {
		end := min(i+size, len(body))
		es.reply(responseBody(body[i:end], eos && end == len(body)))
	}
	return h
}

// miss asks body, checks that it goes upstream and plays the answer to the end.
func miss(t *testing.T, env *testEnv, body, contentType, ans string, kv ...string) {
	t.Helper()
	es, resp := ask(t, env, body, kv...)
	if resp.GetRequestBody() == nil {
		t.Fatalf("body reply = %v, want a BodyResponse (a miss)", resp)
	}
	h := answer(t, es, "200", contentType, ans, true)
	if h[headerCache] != "miss" {
		t.Errorf("%s = %q on the answer, want miss", headerCache, h[headerCache])
	}
	es.expectEOF()
}

// hit asks body and returns the immediate response of a hit.
func hit(t *testing.T, env *testEnv, body string, kv ...string) *v3procservicepb.ImmediateResponse {
	t.Helper()
	es, resp := ask(t, env, body, kv...)
	ir := resp.GetImmediateResponse()
	if ir == nil {
		t.Fatalf("body reply = %v, want an ImmediateResponse (a hit)", resp)
	}
	if err := resp.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	es.expectEOF()
	return ir
}

func mustEntry(t *testing.T, jsonBody string) *cache.Entry {
	t.Helper()
	e, err := cache.EntryFromJSON([]byte(jsonBody))
	if err != nil {
		t.Fatalf("EntryFromJSON(%s) = %v", jsonBody, err)
	}
	return e
}

func TestCacheHitJSON(t *testing.T) {
	env, _ := newCacheEnv(t)
	body := question("What is the capital of Vietnam?", "")
	miss(t, env, body, "application/json", cachedJSON)

	// Different spacing and case of the text normalise to the same key.
	ir := hit(t, env, question("  what is the capital of   vietnam?", ""))
	if got := ir.GetStatus().GetCode(); got != 200 {
		t.Errorf("status = %d, want 200", got)
	}
	want := map[string]string{
		"content-type": "application/json", headerCache: "hit", headerCacheLayer: "l1",
		routeheaders.Model: "gpt-4o-mini", "x-request-id": "req-123",
	}
	if diff := cmp.Diff(want, headers(t, ir.GetHeaders())); diff != "" {
		t.Errorf("hit headers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(mustEntry(t, cachedJSON), mustEntry(t, string(ir.GetBody()))); diff != "" {
		t.Errorf("hit body (-want +got):\n%s", diff)
	}

	// Tokens count what providers reported: the miss only. The hit saved its list price.
	checkCounter(t, env, "input", 7)
	wantSaved := (7*0.15 + 4*0.60) / 1e6
	saved := gatherValue(t, env.reg, "phogate_cache_saved_usd_total")
	if math.Abs(saved-wantSaved) > 1e-12 {
		t.Errorf("phogate_cache_saved_usd_total = %v, want %v", saved, wantSaved)
	}
	requests := env.srv.metrics.requests.WithLabelValues("chat", "gpt-4o-mini", "200")
	if got := testutil.ToFloat64(requests); got != 2 {
		t.Errorf("requests_total{chat,gpt-4o-mini,200} = %v, want 2", got)
	}
}

// gatherValue sums the values of every series of the metric name in reg.
func gatherValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func TestCacheHitSSE(t *testing.T) {
	tests := []struct {
		name         string
		storedType   string // content type of the answer that was stored
		stored       string
		extra        string // request fields of the hit
		wantType     string
		wantUsage    bool
		wantStreamed bool
	}{
		{"json to stream with usage", "application/json", cachedJSON,
			`"stream":true,"stream_options":{"include_usage":true},`,
			"text/event-stream", true, true},
		{"json to stream without usage", "application/json", cachedJSON,
			`"stream":true,`, "text/event-stream", false, true},
		{"stream to stream with usage", "text/event-stream", cachedSSE,
			`"stream":true,"stream_options":{"include_usage":true},`,
			"text/event-stream", true, true},
		{"stream to json", "text/event-stream", cachedSSE, "", "application/json", true, false},
	}
	want := mustEntry(t, cachedJSON)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := newCacheEnv(t)
			q := fmt.Sprintf("question number %d", i)
			stored := question(q, "")
			if tt.storedType == "text/event-stream" {
				stored = question(q, `"stream":true,`)
			}
			miss(t, env, stored, tt.storedType, tt.stored)

			ir := hit(t, env, question(q, tt.extra))
			h := headers(t, ir.GetHeaders())
			if h["content-type"] != tt.wantType || h[headerCache] != "hit" {
				t.Errorf("hit headers = %v, want content-type %s and a hit", h, tt.wantType)
			}
			var got *cache.Entry
			if tt.wantStreamed {
				if h["cache-control"] != "no-cache" {
					t.Errorf("cache-control = %q on a cached stream, want no-cache", h["cache-control"])
				}
				got = reassemble(t, ir.GetBody())
			} else {
				got = mustEntry(t, string(ir.GetBody()))
			}
			if (got.Usage != nil) != tt.wantUsage {
				t.Errorf("usage = %v, want present %v", got.Usage, tt.wantUsage)
			}
			got.Usage = nil
			wantNoUsage := *want
			wantNoUsage.Usage = nil
			if diff := cmp.Diff(&wantNoUsage, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
}

// reassemble parses a cached SSE body: events end with a blank line and the last is [DONE].
func reassemble(t *testing.T, body []byte) *cache.Entry {
	t.Helper()
	if !bytes.HasSuffix(body, []byte("data: [DONE]\n\n")) {
		t.Errorf("SSE body does not end with data: [DONE]:\n%s", body)
	}
	var r cache.Reassembler
	if _, err := r.Write(body); err != nil {
		t.Fatalf("reassembling %s: %v", body, err)
	}
	e, err := r.Result()
	if err != nil || !r.Done() {
		t.Fatalf("Result() = %v, done %v", err, r.Done())
	}
	return e
}

func TestCacheControl(t *testing.T) {
	env, _ := newCacheEnv(t)

	// no-cache: not answered from the cache, although the answer is there.
	q1 := question("no-cache question", "")
	miss(t, env, q1, "application/json", cachedJSON)
	miss(t, env, q1, "application/json", cachedJSON, "cache-control", "no-cache")
	hit(t, env, q1)

	// no-store: the answer is not stored.
	q2 := question("no-store question", "")
	miss(t, env, q2, "application/json", cachedJSON, "cache-control", "no-store")
	miss(t, env, q2, "application/json", cachedJSON)
	hit(t, env, q2)

	// max-age=0 accepts no stored answer.
	miss(t, env, q2, "application/json", cachedJSON, "cache-control", "max-age=0")
}

func TestCacheNeverCached(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"n > 1", question("several answers", `"n":2,`)},
		{"embeddings", `{"model":"text-embedding-3-small","input":"hi"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := newCacheEnv(t)
			path := "/v1/chat/completions"
			if strings.Contains(tt.body, "input") {
				path = "/v1/embeddings"
			}
			for range 2 {
				es := env.open(t)
				es.reply(postHeaders(path, len(tt.body)))
				if resp := es.reply(requestBody(tt.body)); resp.GetRequestBody() == nil {
					t.Fatalf("body reply = %v, want a BodyResponse", resp)
				}
				h := answer(t, es, "200", "application/json", cachedJSON, true)
				if v, ok := h[headerCache]; ok {
					t.Errorf("%s = %q on an uncacheable request, want none", headerCache, v)
				}
			}
		})
	}
}

func TestCacheStoresOnlyComplete(t *testing.T) {
	noFinish := strings.Replace(cachedJSON, `,"finish_reason":"stop"`, "", 1)
	noDone := strings.TrimSuffix(cachedSSE, "data: [DONE]\n\n")
	errChunk := strings.Replace(cachedSSE, "data: [DONE]",
		`data: {"error":{"message":"overloaded"}}`+"\n\ndata: [DONE]", 1)
	tests := []struct {
		name        string
		status      string
		contentType string
		body        string
		eos         bool
	}{
		{"error status", "500", "application/json", `{"error":{"message":"boom"}}`, true},
		{"status 201", "201", "application/json", cachedJSON, true},
		{"no finish reason", "200", "application/json", noFinish, true},
		{"not JSON", "200", "application/json", "not json", true},
		{"stream without DONE", "200", "text/event-stream", noDone, true},
		{"stream with an error chunk", "200", "text/event-stream", errChunk, true},
		{"client gone before DONE", "200", "text/event-stream", noDone, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := newCacheEnv(t)
			body := question("incomplete "+tt.name, `"stream":true,`)
			es, resp := ask(t, env, body)
			if resp.GetRequestBody() == nil {
				t.Fatalf("body reply = %v, want a BodyResponse", resp)
			}
			answer(t, es, tt.status, tt.contentType, tt.body, tt.eos)
			if !tt.eos {
				// Envoy ends the ext_proc stream when the client goes away.
				es.close()
			}

			// The next identical request goes upstream. It may first wait for the first
			// one's flight, which its end abandons.
			if _, resp := ask(t, env, body); resp.GetRequestBody() == nil {
				t.Errorf("reply after %s = %v, want a BodyResponse (nothing stored)", tt.name, resp)
			}
		})
	}
}

// A stream is whole at its [DONE] event: a client that hangs up right after reading it
// leaves a complete answer, which is stored although the end of the stream never arrives.
func TestCacheStoresStreamAtDone(t *testing.T) {
	env, _ := newCacheEnv(t)
	body := question("gone after done", `"stream":true,`)
	es, resp := ask(t, env, body)
	if resp.GetRequestBody() == nil {
		t.Fatalf("body reply = %v, want a BodyResponse", resp)
	}
	answer(t, es, "200", "text/event-stream", cachedSSE, false)
	es.close()
	if _, resp := ask(t, env, body); resp.GetImmediateResponse() == nil {
		t.Errorf("reply after a complete stream = %v, want a cache hit", resp)
	}
}

func TestCacheCollapse(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		wantHit bool
	}{
		{"leader answers", "200", true},
		{"leader fails", "503", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := newCacheEnv(t)
			body := question("collapsed question", "")
			leader, resp := ask(t, env, body)
			if resp.GetRequestBody() == nil {
				t.Fatalf("leader body reply = %v, want a BodyResponse", resp)
			}

			follower := env.open(t)
			follower.reply(chatHeaders(len(body)))
			if err := follower.stream.Send(requestBody(body)); err != nil {
				t.Fatal(err)
			}
			// The follower waits for the leader, first extending Envoy's message timer to
			// the collapse wait plus one message timeout (10s + 1s by default).
			ext, err := follower.stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if got := ext.GetOverrideMessageTimeout().AsDuration(); got != 11*time.Second {
				t.Errorf("override_message_timeout = %v (reply %v), want 11s", got, ext)
			}

			answer(t, leader, tt.status, "application/json", cachedJSON, true)
			resp, err = follower.stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantHit {
				h := headers(t, resp.GetImmediateResponse().GetHeaders())
				if h[headerCache] != "hit" || h[headerCacheLayer] != "l1" {
					t.Errorf("follower reply = %v, want a hit from l1", resp)
				}
				return
			}
			if resp.GetRequestBody() == nil {
				t.Errorf("follower reply = %v, want a BodyResponse (goes upstream)", resp)
			}
		})
	}
}
