package e2e

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/phochat/phogate/test/testenv"
)

// semanticSection turns the semantic cache on with the built-in embedder and its default
// threshold (0.99) for every model but gpt-4o, whose low threshold lets near-identical
// questions reach the guard.
const semanticSection = `cache:
  semantic:
    enabled: true
    thresholds: {gpt-4o: 0.5}
`

// The built-in embedder is lexical: at its default threshold it matches changes of case,
// punctuation, plurals and tenses, not rewordings ("What's" for "What is" already scores
// about 0.987). These paraphrases are ones it matches.
const (
	semStored     = "How do I reset my password on the website?"
	semParaphrase = "how do I reset my passwords on the website"
)

// semanticHeaders returns the semantic cache headers of an answer.
func semanticHeaders(t *testing.T, resp *http.Response) (result, layer string, sim float64) {
	t.Helper()
	result, layer = cacheHeaders(resp)
	if result != "hit" || layer != "semantic" {
		return result, layer, 0
	}
	s := resp.Header.Get("x-phogate-cache-similarity")
	sim, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Errorf("x-phogate-cache-similarity = %q, want a number", s)
	}
	if resp.Header.Get("x-phogate-cache-entry") == "" {
		t.Errorf("a semantic hit has no x-phogate-cache-entry")
	}
	return result, layer, sim
}

func TestSemanticCacheParaphrase(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := cacheStack(t, fakes, semanticSection)
	client := newClient(s)
	alpha := fakes.servers["alpha"]

	first, resp := askChat(t, client, chatParams("gpt-4o-mini", semStored))
	if r, _ := cacheHeaders(resp); r != "miss" {
		t.Fatalf("first answer x-phogate-cache = %q, want miss", r)
	}
	second, resp := askChat(t, client, chatParams("gpt-4o-mini", semParaphrase))
	r, l, sim := semanticHeaders(t, resp)
	if r != "hit" || l != "semantic" || sim < 0.99 || sim > 1 {
		t.Errorf("paraphrase: cache headers %q, %q, similarity %v, want hit, semantic, >= 0.99",
			r, l, sim)
	}
	if n := alpha.Calls(); n != 1 {
		t.Errorf("alpha calls = %d, want 1 (the paraphrase answered from the cache)", n)
	}
	if diff := cmp.Diff(answerOf(first), answerOf(second)); diff != "" {
		t.Errorf("semantic answer (-first +second):\n%s", diff)
	}
	assertMetric(t, s, `phogate_semantic_lookups_total{result="hit"} 1`)

	// A question that differs in a number goes to the provider: below the threshold at the
	// default, and rejected by the guard where the threshold lets it through.
	for _, model := range []string{"gpt-4o-mini", "gpt-4o"} {
		askChat(t, client, chatParams(model, "How many days are in the year 2024?"))
		_, resp = askChat(t, client, chatParams(model, "How many days are in the year 2023?"))
		if r, _ := cacheHeaders(resp); r != "miss" {
			t.Errorf("%s: a question with another number: x-phogate-cache = %q, want miss",
				model, r)
		}
	}
	if n := alpha.Calls(); n != 5 {
		t.Errorf("alpha calls = %d, want 5", n)
	}
	assertMetric(t, s, `phogate_semantic_lookups_total{result="guard_rejected"} 1`)
}

func TestSemanticCacheStreaming(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	s := cacheStack(t, fakes, semanticSection)
	client := newClient(s)

	first, _, resp := streamChat(t, client, semStored)
	if r, _ := cacheHeaders(resp); r != "miss" {
		t.Fatalf("first answer x-phogate-cache = %q, want miss", r)
	}
	second, _, resp := streamChat(t, client, semParaphrase)
	if r, l, _ := semanticHeaders(t, resp); r != "hit" || l != "semantic" {
		t.Errorf("streamed paraphrase: cache headers %q, %q, want hit, semantic", r, l)
	}
	if n := fakes.servers["alpha"].Calls(); n != 1 {
		t.Errorf("alpha calls = %d, want 1", n)
	}
	if diff := cmp.Diff(accumulated(first), accumulated(second)); diff != "" {
		t.Errorf("semantic streamed answer (-first +second):\n%s", diff)
	}
}

func TestSemanticCacheAcrossGateways(t *testing.T) {
	fakes := startFakes(t, "alpha", "beta")
	redisSection := "redis:\n  url: " + redisURL(testenv.Redis(t)) + "\n  timeout: 200ms\n"
	a := cacheStack(t, fakes, semanticSection+redisSection)
	b := cacheStack(t, fakes, semanticSection+redisSection)

	params := chatParams("gpt-4o-mini", semStored)
	params.Messages = append([]openai.ChatCompletionMessageParamUnion{
		openai.SystemMessage("Answer in one sentence.")}, params.Messages...)
	askChat(t, newClient(a), params)
	// The entry reaches the other gateway through the Redis stream it follows.
	waitMetric(t, b, "phogate_semantic_index_entries 1")

	params.Messages[1] = openai.UserMessage(semParaphrase)
	_, resp := askChat(t, newClient(b), params, option.WithHeader("x-request-id", "sem-b"))
	if r, l, _ := semanticHeaders(t, resp); r != "hit" || l != "semantic" {
		t.Errorf("paraphrase through the other gateway: cache headers %q, %q, "+
			"want hit, semantic", r, l)
	}
	if n := fakes.servers["alpha"].Calls(); n != 1 {
		t.Errorf("alpha calls = %d, want 1 (the answer came through Redis)", n)
	}
}
