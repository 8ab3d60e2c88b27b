package fakeprovider

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// newSDKClient serves s on a loopback port and returns an official SDK client pointed at it
// through a non-default prefix.
func newSDKClient(t *testing.T, s *Server, opts ...option.RequestOption) openai.Client {
	t.Helper()
	r, err := Listen(testContext(t), "127.0.0.1:0", s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	// A private transport, so no idle connection outlives the test.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	base := []option.RequestOption{
		option.WithBaseURL("http://" + r.Addr() + "/openai/v1/"),
		option.WithAPIKey("sk-test"),
		option.WithHTTPClient(&http.Client{Transport: tr}),
		option.WithMaxRetries(0),
	}
	return openai.NewClient(append(base, opts...)...)
}

func chatParams(text string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model: "gpt-fake",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("answer in one line"),
			openai.UserMessage(text),
		},
	}
}

func TestSDKChat(t *testing.T) {
	s := New(Options{Name: "sdk"})
	client := newSDKClient(t, s)
	ctx := testContext(t)

	got, err := client.Chat.Completions.New(ctx, chatParams("what is two plus two"))
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	content := got.Choices[0].Message.Content
	words := len(strings.Fields(content))
	// The SDK deprecates the SystemFingerprint field, so the raw JSON is read instead.
	fingerprint := got.JSON.SystemFingerprint.Raw()
	if got.Model != "gpt-fake" || fingerprint != `"sdk"` || words < minWords {
		t.Errorf("completion = model %q fingerprint %s content %q", got.Model, fingerprint, content)
	}
	if got.Usage.PromptTokens != 9 || got.Usage.CompletionTokens != int64(words) {
		t.Errorf("usage = %+v, want 9 prompt and %d completion tokens", got.Usage, words)
	}
	if got.Choices[0].FinishReason != "stop" {
		t.Errorf("finish_reason = %q, want stop", got.Choices[0].FinishReason)
	}

	p := chatParams("what is two plus two")
	p.MaxCompletionTokens = openai.Int(2)
	short, err := client.Chat.Completions.New(ctx, p)
	if err != nil {
		t.Fatalf("New(max_completion_tokens=2) = %v", err)
	}
	if short.Choices[0].FinishReason != "length" ||
		len(strings.Fields(short.Choices[0].Message.Content)) != 2 {
		t.Errorf("capped completion = %q, %q; want 2 words and length",
			short.Choices[0].Message.Content, short.Choices[0].FinishReason)
	}
}

func TestSDKStreamingAccumulatesUsage(t *testing.T) {
	s := New(Options{Name: "sdk", Behavior: Behavior{TokensPerSecond: 1000}})
	client := newSDKClient(t, s)
	ctx := testContext(t)

	want, err := client.Chat.Completions.New(ctx, chatParams("stream this please"))
	if err != nil {
		t.Fatalf("New() = %v", err)
	}

	p := chatParams("stream this please")
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(ctx, p)
	defer stream.Close()
	var acc openai.ChatCompletionAccumulator
	var chunks int
	for stream.Next() {
		if !acc.AddChunk(stream.Current()) {
			t.Fatalf("AddChunk(%s) = false", stream.Current().RawJSON())
		}
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}

	wantContent, gotContent := want.Choices[0].Message.Content, acc.Choices[0].Message.Content
	if diff := cmp.Diff(wantContent, gotContent); diff != "" {
		t.Errorf("streamed content mismatch (-want +got):\n%s", diff)
	}
	type u struct{ Prompt, Completion, Total int64 }
	wantU := u{want.Usage.PromptTokens, want.Usage.CompletionTokens, want.Usage.TotalTokens}
	gotU := u{acc.Usage.PromptTokens, acc.Usage.CompletionTokens, acc.Usage.TotalTokens}
	if diff := cmp.Diff(wantU, gotU); diff != "" {
		t.Errorf("accumulated usage mismatch (-want +got):\n%s", diff)
	}
	if wantChunks := int(want.Usage.CompletionTokens) + 3; chunks != wantChunks {
		t.Errorf("chunks = %d, want %d (role, words, finish, usage)", chunks, wantChunks)
	}
	if acc.Choices[0].FinishReason != "stop" || acc.Model != "gpt-fake" {
		t.Errorf("accumulated finish, model = %q, %q", acc.Choices[0].FinishReason, acc.Model)
	}
}

func TestSDKToolCall(t *testing.T) {
	client := newSDKClient(t, New(Options{}))
	p := chatParams("please call_tool for me")
	p.Tools = []openai.ChatCompletionToolUnionParam{
		openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "search"}),
	}
	got, err := client.Chat.Completions.New(testContext(t), p)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	calls := got.Choices[0].Message.ToolCalls
	if len(calls) != 1 || calls[0].Function.Name != "search" ||
		got.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("tool calls = %+v, finish %q", calls, got.Choices[0].FinishReason)
	}
}

func TestSDKEmbeddings(t *testing.T) {
	client := newSDKClient(t, New(Options{}))
	got, err := client.Embeddings.New(testContext(t), openai.EmbeddingNewParams{
		Model: "text-embedding-fake",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a b c", "d"}},
	})
	if err != nil {
		t.Fatalf("Embeddings.New() = %v", err)
	}
	if len(got.Data) != 2 || len(got.Data[0].Embedding) != defaultDims ||
		got.Usage.PromptTokens != 4 || got.Data[1].Index != 1 {
		t.Errorf("embeddings = %d items, %d dims, usage %+v", len(got.Data),
			len(got.Data[0].Embedding), got.Usage)
	}
}

func TestSDKErrors(t *testing.T) {
	tests := []struct {
		name     string
		header   string
		behavior Behavior
		want     int
	}{
		{"header 429", "429", Behavior{}, http.StatusTooManyRequests},
		{"header 503", "503", Behavior{}, http.StatusServiceUnavailable},
		{"rate limit rate", "", Behavior{RateLimitRate: 1}, http.StatusTooManyRequests},
		{"error rate", "", Behavior{ErrorRate: 1}, http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{Behavior: tt.behavior})
			var opts []option.RequestOption
			if tt.header != "" {
				opts = append(opts, option.WithHeader(HeaderStatus, tt.header))
			}
			client := newSDKClient(t, s, opts...)
			_, err := client.Chat.Completions.New(testContext(t), chatParams("x"))
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.want {
				t.Fatalf("New() error = %v, want API error %d", err, tt.want)
			}
			if s.Calls() != 1 {
				t.Errorf("Calls() = %d, want 1 (no retries)", s.Calls())
			}
		})
	}
}

func TestSDKRetriesPastInjectedError(t *testing.T) {
	// Every second call fails: the first request succeeds, the second fails once and
	// succeeds on the SDK's retry.
	s := New(Options{Behavior: Behavior{ErrorRate: 0.5}})
	client := newSDKClient(t, s, option.WithMaxRetries(1))
	for i := range 2 {
		if _, err := client.Chat.Completions.New(testContext(t), chatParams("x")); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if s.Calls() != 3 {
		t.Errorf("Calls() = %d, want 3", s.Calls())
	}
}
