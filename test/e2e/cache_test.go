package e2e

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/redis/go-redis/v9"

	"github.com/phochat/phogate/test/fakeprovider"
	"github.com/phochat/phogate/test/testenv"
)

// cacheStack starts a gateway over the alpha and beta fakes, with extra configuration
// appended (for example a redis section).
func cacheStack(t *testing.T, fakes *fakeSet, extra string) *stack {
	t.Helper()
	return startStack(t, stackOptions{
		Config: twoProviders(fakes) + extra,
		Env:    []string{"E2E_ALPHA_KEY=sk-alpha", "E2E_BETA_KEY=sk-beta"},
	})
}

// cacheHeaders returns the cache headers of an answer: x-phogate-cache and
// x-phogate-cache-layer.
func cacheHeaders(resp *http.Response) (result, layer string) {
	return resp.Header.Get("x-phogate-cache"), resp.Header.Get("x-phogate-cache-layer")
}

// ask sends one non-streaming chat completion and returns it with its HTTP response.
func askChat(t *testing.T, client openai.Client, params openai.ChatCompletionNewParams,
	opts ...option.RequestOption) (*openai.ChatCompletion, *http.Response) {
	t.Helper()
	var resp *http.Response
	got, err := client.Chat.Completions.New(t.Context(), params,
		append(opts, option.WithResponseInto(&resp))...)
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	return got, resp
}

// streamChat sends one streaming chat completion that asks for usage and returns the
// accumulated answer, the number of chunks and the HTTP response.
func streamChat(t *testing.T, client openai.Client,
	question string) (openai.ChatCompletionAccumulator, int, *http.Response) {
	t.Helper()
	params := chatParams("gpt-4o-mini", question)
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	var resp *http.Response
	stream := client.Chat.Completions.NewStreaming(t.Context(), params,
		option.WithResponseInto(&resp))
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return acc, chunks, resp
}

func TestCacheNonStreaming(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := cacheStack(t, fakes, "")
	client := newClient(s)
	params := chatParams("gpt-4o-mini", "What is the capital of Vietnam?")

	first, resp := askChat(t, client, params)
	if r, _ := cacheHeaders(resp); r != "miss" {
		t.Errorf("first answer x-phogate-cache = %q, want miss", r)
	}
	second, resp := askChat(t, client, params)
	if r, l := cacheHeaders(resp); r != "hit" || l != "l1" {
		t.Errorf("second answer cache headers = %q, %q, want hit, l1", r, l)
	}
	if m := resp.Header.Get("x-phogate-model"); m != "gpt-4o-mini" {
		t.Errorf("hit x-phogate-model = %q, want gpt-4o-mini", m)
	}
	if resp.Header.Get("x-request-id") == "" {
		t.Errorf("hit has no x-request-id")
	}
	if n := fakes.servers["alpha"].Calls(); n != 1 {
		t.Errorf("alpha calls = %d, want 1 (the second answer from the cache)", n)
	}
	if diff := cmp.Diff(answerOf(first), answerOf(second)); diff != "" {
		t.Errorf("cached answer (-first +second):\n%s", diff)
	}
	if second.Usage.PromptTokens != 6 {
		t.Errorf("cached usage = %+v, want 6 prompt tokens", second.Usage)
	}
	assertMetric(t, s, `phogate_cache_lookups_total{layer="l1",result="hit"} 1`)
	assertMetric(t, s, `phogate_cache_saved_usd_total{model="gpt-4o-mini"}`)
	// Tokens count what the provider reported: the miss alone.
	assertMetric(t, s, `phogate_extproc_tokens_total{direction="input",model="gpt-4o-mini"} 6`)

	// Cache-Control: no-cache goes to the provider.
	_, resp = askChat(t, client, params, option.WithHeader("Cache-Control", "no-cache"))
	if r, _ := cacheHeaders(resp); r != "miss" {
		t.Errorf("no-cache answer x-phogate-cache = %q, want miss", r)
	}
	if n := fakes.servers["alpha"].Calls(); n != 2 {
		t.Errorf("alpha calls = %d after a no-cache request, want 2", n)
	}
}

// answer is what a client reads of a completion.
type answer struct {
	ID, Model, Content, Finish string
	Usage                      tokens
}

// tokens are the token counts of a usage.
type tokens struct{ Prompt, Completion, Total int64 }

func usageOf(u openai.CompletionUsage) tokens {
	return tokens{u.PromptTokens, u.CompletionTokens, u.TotalTokens}
}

func answerOf(c *openai.ChatCompletion) answer {
	return answer{c.ID, c.Model, c.Choices[0].Message.Content, c.Choices[0].FinishReason,
		usageOf(c.Usage)}
}

func accumulated(a openai.ChatCompletionAccumulator) answer {
	return answerOf(&a.ChatCompletion)
}

func TestCacheStreaming(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := cacheStack(t, fakes, "")
	client := newClient(s)
	question := "Explain how to cook pho step by step"

	live, liveChunks, resp := streamChat(t, client, question)
	if r, _ := cacheHeaders(resp); r != "miss" {
		t.Errorf("live stream x-phogate-cache = %q, want miss", r)
	}
	cached, chunks, resp := streamChat(t, client, question)
	if r, l := cacheHeaders(resp); r != "hit" || l != "l1" {
		t.Errorf("second stream cache headers = %q, %q, want hit, l1", r, l)
	}
	if ct := resp.Header.Get("content-type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("cached stream content-type = %q, want text/event-stream", ct)
	}
	if n := fakes.servers["alpha"].Calls(); n != 1 {
		t.Errorf("alpha calls = %d, want 1", n)
	}
	// The cached stream parses like the live one: same content, finish reason and usage,
	// in fewer chunks (one per field rather than one per token).
	if chunks < 3 || liveChunks < chunks {
		t.Errorf("cached stream has %d chunks, live %d", chunks, liveChunks)
	}
	if diff := cmp.Diff(accumulated(live), accumulated(cached)); diff != "" {
		t.Errorf("cached stream (-live +cached):\n%s", diff)
	}
	if live.Usage.PromptTokens != 8 {
		t.Errorf("live usage = %+v, want 8 prompt tokens", live.Usage)
	}

	// A streamed answer serves a non-streaming request...
	got, resp := askChat(t, client, chatParams("gpt-4o-mini", question))
	if r, _ := cacheHeaders(resp); r != "hit" {
		t.Errorf("non-streaming request after a stream: x-phogate-cache = %q, want hit", r)
	}
	if diff := cmp.Diff(accumulated(live), answerOf(got)); diff != "" {
		t.Errorf("non-streaming hit (-live stream +hit):\n%s", diff)
	}

	// ...and a non-streamed answer serves a streaming request.
	other := "Name three noodle soups"
	plain, _ := askChat(t, client, chatParams("gpt-4o-mini", other))
	streamed, _, resp := streamChat(t, client, other)
	if r, _ := cacheHeaders(resp); r != "hit" {
		t.Errorf("streaming request after a non-streamed answer: x-phogate-cache = %q, want hit", r)
	}
	if diff := cmp.Diff(answerOf(plain), accumulated(streamed)); diff != "" {
		t.Errorf("streamed hit (-answer +hit):\n%s", diff)
	}
	if n := fakes.servers["alpha"].Calls(); n != 2 {
		t.Errorf("alpha calls = %d, want 2 (one per question)", n)
	}
}

// redisURL returns the URL of the logical database a test Redis client uses.
func redisURL(c *redis.Client) string {
	o := c.Options()
	u := url.URL{Scheme: "redis", Host: o.Addr, Path: "/" + strconv.Itoa(o.DB)}
	if o.Password != "" {
		u.User = url.UserPassword(o.Username, o.Password)
	}
	return u.String()
}

func TestCacheCollapseAcrossGateways(t *testing.T) {
	const requests = 50
	fakes := startFakes(t, "alpha", "beta")
	// The provider is slow, so that every request arrives while the first is in flight, and
	// slower than the stack's 2s message timeout: waiting requests get their answer only
	// because they extend Envoy's timer (override_message_timeout within the published
	// max_message_timeout).
	fakes.servers["alpha"].SetBehavior(fakeprovider.Behavior{TTFT: 3 * time.Second})
	redisSection := "redis:\n  url: " + redisURL(testenv.Redis(t)) + "\n  timeout: 200ms\n"
	clients := []openai.Client{
		newClient(cacheStack(t, fakes, redisSection)),
		newClient(cacheStack(t, fakes, redisSection)),
	}

	params := chatParams("gpt-4o-mini", "Which river flows through Hanoi?")
	type result struct {
		content, cache, layer string
		err                   error
	}
	results := make([]result, requests)
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			var resp *http.Response
			got, err := clients[i%2].Chat.Completions.New(t.Context(), params,
				option.WithResponseInto(&resp))
			if err != nil {
				results[i].err = err
				return
			}
			r, l := cacheHeaders(resp)
			results[i] = result{content: got.Choices[0].Message.Content, cache: r, layer: l}
		})
	}
	wg.Wait()

	counts := map[string]int{}
	fromRedis := 0
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
		if r.content != results[0].content {
			t.Errorf("request %d content %q, want %q", i, r.content, results[0].content)
		}
		counts[r.cache]++
		if r.layer == "l2" {
			fromRedis++
		}
	}
	if n := fakes.servers["alpha"].Calls(); n != 1 {
		t.Errorf("alpha calls = %d for %d identical requests on two gateways, want 1", n, requests)
	}
	if want := map[string]int{"miss": 1, "hit": requests - 1}; !cmp.Equal(want, counts) {
		t.Errorf("x-phogate-cache values = %v, want %v", counts, want)
	}
	// The gateway that did not call the provider got the answer through Redis.
	if fromRedis == 0 {
		t.Errorf("no answer came from l2 (Redis); the second gateway must have read it there")
	}
}

func TestCacheRedisDown(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	url, stop, restart := testenv.StartRedis(t)
	s := cacheStack(t, fakes, "redis:\n  url: "+url+"\n")
	client := newClient(s)
	first := chatParams("gpt-4o-mini", "Is Redis up?")

	askChat(t, client, first)
	assertMetric(t, s, `phogate_cache_stores_total{layer="l2",result="ok"} 1`)

	stop()
	// Answers keep coming: from memory for a stored question, from the provider otherwise,
	// and the new answer is kept in memory.
	for i, q := range []string{"Is Redis up?", "Is Redis down?", "Is Redis down?"} {
		_, resp := askChat(t, client, chatParams("gpt-4o-mini", q))
		wantCache := []string{"hit", "miss", "hit"}[i]
		if r, l := cacheHeaders(resp); r != wantCache || (r == "hit" && l != "l1") {
			t.Errorf("%q with Redis down: cache headers %q, %q, want %s from l1", q, r, l, wantCache)
		}
	}
	if n := fakes.servers["alpha"].Calls(); n != 2 {
		t.Errorf("alpha calls = %d, want 2", n)
	}
	assertMetric(t, s, "phogate_cache_redis_up 0")

	// Redis comes back (empty) and the gateway uses it again.
	restart()
	waitMetric(t, s, "phogate_cache_redis_up 1")
	askChat(t, client, chatParams("gpt-4o-mini", "Is Redis back?"))
	assertMetric(t, s, `phogate_cache_stores_total{layer="l2",result="ok"} 2`)
}

// waitMetric polls phogate's /metrics until it has a line starting with want.
func waitMetric(t *testing.T, s *stack, want string) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(defaultTestTimeout)
	defer deadline.Stop()
	for {
		_, body := get(t, s.AdminURL+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, want) {
				return
			}
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("metrics never had a line %q", want)
		}
	}
}
