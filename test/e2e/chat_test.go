package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/phochat/phogate/test/fakeprovider"
)

// twoProviders is the provider and model part of the configuration used by these tests:
// "alpha" serves both chat models under their own names; "beta" serves gpt-4o-mini only,
// under another name and behind another base path, and is used when alpha cannot be.
func twoProviders(f *fakeSet) string {
	return fmt.Sprintf(`providers:
  - name: alpha
    base_url: http://%s/v1
    api_key_env: E2E_ALPHA_KEY
    models: [gpt-4o-mini, gpt-4o, text-embedding-3-small]
  - name: beta
    base_url: http://%s/openai/v1
    auth_header: api-key
    api_key_env: E2E_BETA_KEY
    priority: 1
    models:
      - {name: gpt-4o-mini, upstream_name: gpt-4o-mini-2024-07-18}
      - {name: beta-only, upstream_name: beta-model-v2}
models:
  - {name: gpt-4o-mini, tier: budget, price: {input: 0.15, output: 0.60}}
  - {name: gpt-4o, tier: premium, price: {input: 2.50, output: 10.00}}
  - {name: beta-only, tier: standard, price: {input: 1, output: 2}}
  - {name: text-embedding-3-small, kind: embedding, tier: budget, price: {input: 0.02, output: 0}}
`, f.addrs["alpha"], f.addrs["beta"])
}

// providerKeys are the provider credentials the gateway reads from its environment.
var providerKeys = []string{"E2E_ALPHA_KEY=sk-alpha", "E2E_BETA_KEY=sk-beta"}

func newClient(s *stack) openai.Client {
	return openai.NewClient(option.WithBaseURL(s.BaseURL), option.WithAPIKey(testAPIKey),
		option.WithMaxRetries(0))
}

func chatParams(model, question string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(question)},
	}
}

func TestChatNonStreaming(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := startStack(t, stackOptions{Config: twoProviders(fakes), Env: providerKeys})
	client := newClient(s)

	var resp *http.Response
	got, err := client.Chat.Completions.New(t.Context(),
		chatParams("gpt-4o-mini", "What is the capital of Vietnam?"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	if got.Model != "gpt-4o-mini" || len(got.Choices) != 1 || got.Choices[0].Message.Content == "" {
		t.Errorf("answer = model %q, %d choices, content %q", got.Model, len(got.Choices),
			got.Choices[0].Message.Content)
	}
	if p := resp.Header.Get(fakeprovider.HeaderProvider); p != "alpha" {
		t.Errorf("served by provider %q, want alpha", p)
	}
	if m := resp.Header.Get("x-phogate-model"); m != "gpt-4o-mini" {
		t.Errorf("x-phogate-model = %q, want gpt-4o-mini", m)
	}
	// The fake counts one prompt token per word: "What is the capital of Vietnam?" has 6.
	if got.Usage.PromptTokens != 6 || got.Usage.CompletionTokens == 0 {
		t.Errorf("usage = %+v, want 6 prompt tokens and some completion tokens", got.Usage)
	}
	if n := fakes.servers["alpha"].Calls(); n != 1 {
		t.Errorf("alpha calls = %d, want 1", n)
	}
	assertServedBy(t, s, resp.Header.Get("x-request-id"), "model_gpt-4o-mini_via_alpha")
	assertMetric(t, s, `phogate_extproc_tokens_total{direction="input",model="gpt-4o-mini"} 6`)
}

func TestChatStreaming(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := startStack(t, stackOptions{Config: twoProviders(fakes), Env: providerKeys})
	client := newClient(s)
	question := "Explain how to cook pho step by step"

	want, err := client.Chat.Completions.New(t.Context(), chatParams("gpt-4o", question))
	if err != nil {
		t.Fatalf("non-streaming: %v", err)
	}

	params := chatParams("gpt-4o", question)
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	// no-cache: the same question was just answered, and this test wants a live stream from
	// the provider, not the cached answer (cache_test.go covers that).
	stream := client.Chat.Completions.NewStreaming(t.Context(), params,
		option.WithHeader("Cache-Control", "no-cache"))
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if chunks < 3 {
		t.Errorf("got %d chunks, want a real stream", chunks)
	}
	if got := acc.Choices[0].Message.Content; got != want.Choices[0].Message.Content {
		t.Errorf("streamed content %q, want the same answer as non-streaming %q", got,
			want.Choices[0].Message.Content)
	}
	if acc.Usage.PromptTokens != 8 || acc.Usage.CompletionTokens != want.Usage.CompletionTokens {
		t.Errorf("streamed usage = %+v, want 8 prompt and %d completion tokens", acc.Usage,
			want.Usage.CompletionTokens)
	}
	assertMetric(t, s, `phogate_extproc_tokens_total{direction="input",model="gpt-4o"} 16`)
}

func TestChatProviderModelNameRewrite(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := startStack(t, stackOptions{Config: twoProviders(fakes), Env: providerKeys})
	client := newClient(s)

	var resp *http.Response
	got, err := client.Chat.Completions.New(t.Context(), chatParams("beta-only", "hello there"),
		option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	if p := resp.Header.Get(fakeprovider.HeaderProvider); p != "beta" {
		t.Errorf("served by %q, want beta", p)
	}
	// The fake answers with the model it was asked for, so this shows what reached it.
	if got.Model != "beta-model-v2" {
		t.Errorf("provider saw model %q, want its own name beta-model-v2", got.Model)
	}
	if m := resp.Header.Get("x-phogate-model"); m != "beta-only" {
		t.Errorf("x-phogate-model = %q, want beta-only", m)
	}
	// Envoy rewrote the client's /v1/ to beta's base path, and phogate put beta's credential
	// in beta's header instead of the client's key.
	if n := fakes.servers["beta"].CallsByPath()["/openai/v1/chat/completions"]; n != 1 {
		t.Errorf("beta calls on /openai/v1/chat/completions = %d, want 1 (by path: %v)", n,
			fakes.servers["beta"].CallsByPath())
	}
	h := fakes.servers["beta"].LastHeaders()
	if h.Get("api-key") != "sk-beta" || h.Get("authorization") != "" {
		t.Errorf("beta saw api-key %q and authorization %q, want sk-beta and none",
			h.Get("api-key"), h.Get("authorization"))
	}
}

func TestFailOpenKeepsChatWorking(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := startStack(t, stackOptions{Config: twoProviders(fakes), FailureMode: "open",
		Env: providerKeys})
	client := newClient(s)
	if _, err := client.Chat.Completions.New(t.Context(), chatParams("gpt-4o", "hi")); err != nil {
		t.Fatalf("chat with phogate up: %v", err)
	}

	s.stopGateway(t)
	var resp *http.Response
	got, err := client.Chat.Completions.New(t.Context(), chatParams("gpt-4o", "still there?"),
		option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("chat with phogate down and failure_mode open: %v", err)
	}
	if got.Choices[0].Message.Content == "" || resp.Header.Get(fakeprovider.HeaderProvider) != "alpha" {
		t.Errorf("answer %q from %q, want an answer from alpha", got.Choices[0].Message.Content,
			resp.Header.Get(fakeprovider.HeaderProvider))
	}
	if a := fakes.servers["alpha"].LastHeaders().Get("authorization"); a != "Bearer sk-alpha" {
		t.Errorf("alpha saw authorization %q, want the provider key set by Envoy", a)
	}

	// Paths phogate does not govern never get the provider's credential.
	status, _ := post(t, strings.TrimSuffix(s.BaseURL, "/v1")+"/v1/files", `{}`)
	if status == http.StatusOK {
		t.Errorf("POST /v1/files = 200, want the provider to refuse it")
	}
}

func TestBadInputErrors(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := startStack(t, stackOptions{Config: twoProviders(fakes), Env: providerKeys})

	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantInBody string
	}{
		{"malformed JSON", `{"model":`, 400, "invalid_request_error"},
		{"missing model", `{"messages":[{"role":"user","content":"hi"}]}`, 400, `"param":"model"`},
		{"missing messages", `{"model":"gpt-4o"}`, 400, `"param":"messages"`},
		{"unknown model", `{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`, 404,
			"model_not_found"},
		{"embedding model for chat", `{"model":"text-embedding-3-small","messages":[{"role":"user","content":"hi"}]}`,
			400, "invalid_request_error"},
		{"body over the limit", `{"model":"gpt-4o","messages":[{"role":"user","content":"` +
			strings.Repeat("x", 2<<20) + `"}]}`, 413, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(t, s.BaseURL+"/chat/completions", tt.body)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantInBody) {
				t.Errorf("POST = %d %s\nwant %d containing %q", status, truncate(body), tt.wantStatus,
					tt.wantInBody)
			}
		})
	}
	if n := fakes.servers["alpha"].Calls() + fakes.servers["beta"].Calls(); n != 0 {
		t.Errorf("providers were called %d times for bad input, want 0", n)
	}

	// The SDK surfaces the same error with its type and code.
	client := newClient(s)
	_, err := client.Chat.Completions.New(t.Context(), chatParams("gpt-9", "hi"))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("SDK error = %v, want a 404 model_not_found", err)
	}
}

func TestModelsAndEmbeddings(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := startStack(t, stackOptions{Config: twoProviders(fakes), Env: providerKeys})
	client := newClient(s)

	page, err := client.Models.List(t.Context())
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	if strings.Join(ids, ",") != "gpt-4o-mini,gpt-4o,beta-only,text-embedding-3-small" {
		t.Errorf("models = %v", ids)
	}
	if n := fakes.servers["alpha"].Calls(); n != 0 {
		t.Errorf("models list reached the provider (%d calls)", n)
	}

	emb, err := client.Embeddings.New(t.Context(), openai.EmbeddingNewParams{
		Model: "text-embedding-3-small",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"pho bo", "bun cha"}},
	})
	if err != nil {
		t.Fatalf("embeddings: %v", err)
	}
	if len(emb.Data) != 2 || len(emb.Data[0].Embedding) == 0 || emb.Usage.PromptTokens != 4 {
		t.Errorf("embeddings = %d vectors, usage %+v", len(emb.Data), emb.Usage)
	}
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// assertServedBy checks, through the stand-in's record, which cluster served a request.
// With a real Envoy there is no such record and the check is skipped.
func assertServedBy(t *testing.T, s *stack, requestID, cluster string) {
	t.Helper()
	if s.Proxy == nil {
		return
	}
	if requestID == "" {
		t.Errorf("response has no x-request-id")
		return
	}
	for _, sv := range s.Proxy.Served() {
		if sv.RequestID == requestID {
			if sv.Cluster != cluster {
				t.Errorf("request %s served by cluster %q, want %q", requestID, sv.Cluster, cluster)
			}
			return
		}
	}
	t.Errorf("request %s not seen by the proxy", requestID)
}

// assertMetric checks that phogate's /metrics has a line starting with want.
func assertMetric(t *testing.T, s *stack, want string) {
	t.Helper()
	_, body := get(t, s.AdminURL+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, want) {
			return
		}
	}
	t.Errorf("metrics have no line %q", want)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
