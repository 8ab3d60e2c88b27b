package extproc

import (
	"log/slog"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/cache/semantic"
	"github.com/phochat/phogate/internal/routeheaders"
)

// The threshold the tests use for gpt-4o-mini, the built-in embedder's default. gpt-4o gets
// a low one so that near-misses reach the guard.
const (
	semTestThreshold    = 0.99
	semTestLowThreshold = 0.5
)

type semanticEnv struct {
	*testEnv
	ix      *semantic.Index
	metrics *semantic.Metrics
}

// newSemanticEnv starts a server with an exact cache in memory and a semantic cache with
// the built-in embedder.
func newSemanticEnv(t *testing.T) *semanticEnv {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := cache.New(cache.Options{Metrics: cache.NewMetrics(reg)})
	if err != nil {
		t.Fatalf("cache.New() = %v", err)
	}
	t.Cleanup(c.Close)
	sm := semantic.NewMetrics(reg)
	ix, err := semantic.New(t.Context(), semantic.Config{Metrics: sm})
	if err != nil {
		t.Fatalf("semantic.New() = %v", err)
	}
	t.Cleanup(func() { ix.Close() })
	threshold := func(model string) float64 {
		if model == "gpt-4o" {
			return semTestLowThreshold
		}
		return semTestThreshold
	}
	env := newTestEnvOpts(t, slog.LevelDebug, Options{Cache: c, Registerer: reg,
		Semantic: SemanticOptions{Index: ix, Metrics: sm, Threshold: threshold}})
	return &semanticEnv{testEnv: env, ix: ix, metrics: sm}
}

// chat returns a chat request body for model with the given messages (JSON objects).
func chat(model string, extra string, msgs ...string) string {
	body := `{"model":"` + model + `",` + extra + `"messages":[`
	for i, m := range msgs {
		if i > 0 {
			body += ","
		}
		body += m
	}
	return body + "]}"
}

func user(text string) string      { return `{"role":"user","content":"` + text + `"}` }
func system(text string) string    { return `{"role":"system","content":"` + text + `"}` }
func assistant(text string) string { return `{"role":"assistant","content":"` + text + `"}` }

// checkSemanticHit checks the headers of a semantic hit and returns its similarity.
func checkSemanticHit(t *testing.T, got map[string]string, contentType string) float64 {
	t.Helper()
	sim, err := strconv.ParseFloat(got[headerCacheSimilarity], 64)
	if err != nil || sim < semTestThreshold || sim > 1 {
		t.Errorf("%s = %q, want a similarity in [%v, 1]", headerCacheSimilarity,
			got[headerCacheSimilarity], semTestThreshold)
	}
	if got[headerCacheEntry] == "" {
		t.Errorf("%s is empty, want the entry id", headerCacheEntry)
	}
	want := map[string]string{
		"content-type": contentType, headerCache: "hit", headerCacheLayer: layerSemantic,
		routeheaders.Model: "gpt-4o-mini", "x-request-id": "req-123",
		headerCacheSimilarity: got[headerCacheSimilarity], headerCacheEntry: got[headerCacheEntry],
	}
	if contentType == "text/event-stream" {
		want["cache-control"] = "no-cache"
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("semantic hit headers (-want +got):\n%s", diff)
	}
	return sim
}

func TestSemanticHit(t *testing.T) {
	// The built-in embedder is lexical: at 0.99 it matches changes of case, punctuation,
	// plurals and tenses, not rewordings.
	const (
		stored     = "How do I reset my password on the website?"
		paraphrase = "how do I reset my passwords on the website"
	)
	tests := []struct {
		name, body, contentType string
	}{
		{"json", chat("gpt-4o-mini", "", user(paraphrase)), "application/json"},
		{"sse", chat("gpt-4o-mini", `"stream":true,"stream_options":{"include_usage":true},`,
			user(paraphrase)), "text/event-stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newSemanticEnv(t)
			miss(t, env.testEnv, chat("gpt-4o-mini", "", user(stored)), "application/json",
				cachedJSON)
			if got := env.ix.Len(); got != 1 {
				t.Fatalf("semantic entries after the miss = %d, want 1", got)
			}
			ir := hit(t, env.testEnv, tt.body)
			checkSemanticHit(t, headers(t, ir.GetHeaders()), tt.contentType)
			var got *cache.Entry
			if tt.contentType == "text/event-stream" {
				got = reassemble(t, ir.GetBody())
			} else {
				got = mustEntry(t, string(ir.GetBody()))
			}
			if diff := cmp.Diff(mustEntry(t, cachedJSON), got); diff != "" {
				t.Errorf("semantic hit body (-want +got):\n%s", diff)
			}
			hits := testutil.ToFloat64(env.metrics.Lookups.WithLabelValues("hit"))
			if hits != 1 {
				t.Errorf("phogate_semantic_lookups_total{result=hit} = %v, want 1", hits)
			}
		})
	}
}

func TestSemanticMiss(t *testing.T) {
	const q = "How many days are in the year 2024?"
	tests := []struct {
		name         string
		stored, next string
		reason       string // the lookups_total result of next
	}{{
		// Similar enough at gpt-4o's low threshold, rejected by the guard.
		name:   "number differs",
		stored: chat("gpt-4o", "", user(q)),
		next:   chat("gpt-4o", "", user("How many days are in the year 2023?")),
		reason: "guard_rejected",
	}, {
		name:   "system prompt differs",
		stored: chat("gpt-4o-mini", "", system("Answer briefly."), user(q)),
		next:   chat("gpt-4o-mini", "", system("Answer in detail."), user(q+"!")),
		reason: "miss",
	}, {
		name:   "earlier turn differs",
		stored: chat("gpt-4o-mini", "", user("Hi"), assistant("Hello!"), user(q)),
		next:   chat("gpt-4o-mini", "", user("Hey"), assistant("Hello!"), user(q+"!")),
		reason: "miss",
	}, {
		name:   "sampling differs",
		stored: chat("gpt-4o-mini", `"temperature":0,`, user(q)),
		next:   chat("gpt-4o-mini", `"temperature":1,`, user(q+"!")),
		reason: "miss",
	}, {
		name:   "served model differs",
		stored: chat("gpt-4o-mini", "", user(q)),
		next:   chat("gpt-4o", "", user(q+"!")),
		reason: "miss",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newSemanticEnv(t)
			miss(t, env.testEnv, tt.stored, "application/json", cachedJSON)
			miss(t, env.testEnv, tt.next, "application/json", cachedJSON)
			// The first lookup of each test is a miss in an empty partition.
			want := 2.0
			if tt.reason != "miss" {
				want = 1
			}
			got := testutil.ToFloat64(env.metrics.Lookups.WithLabelValues(tt.reason))
			if got != want {
				t.Errorf("phogate_semantic_lookups_total{result=%s} = %v, want %v",
					tt.reason, got, want)
			}
			if hits := testutil.ToFloat64(env.metrics.Lookups.WithLabelValues("hit")); hits != 0 {
				t.Errorf("phogate_semantic_lookups_total{result=hit} = %v, want 0", hits)
			}
		})
	}
}

func TestSemanticMultiTurn(t *testing.T) {
	env := newSemanticEnv(t)
	turns := []string{system("You are terse."), user("What is the capital of Vietnam?"),
		assistant("Hanoi.")}
	miss(t, env.testEnv, chat("gpt-4o-mini", "", append(turns, user("And its population?"))...),
		"application/json", cachedJSON)
	ir := hit(t, env.testEnv,
		chat("gpt-4o-mini", "", append(turns, user("and its population"))...))
	checkSemanticHit(t, headers(t, ir.GetHeaders()), "application/json")
}

func TestSemanticNoCacheSkipsLookupButStores(t *testing.T) {
	env := newSemanticEnv(t)
	const q = "What is the capital of Vietnam?"
	miss(t, env.testEnv, chat("gpt-4o-mini", "", user(q)), "application/json", cachedJSON,
		"cache-control", "no-cache")
	if got := env.ix.Len(); got != 1 {
		t.Fatalf("semantic entries = %d, want 1 (stored without a lookup)", got)
	}
	miss(t, env.testEnv, chat("gpt-4o-mini", "", user(q+"!")), "application/json", cachedJSON,
		"cache-control", "no-cache")
	ir := hit(t, env.testEnv, chat("gpt-4o-mini", "", user(q+"!!")))
	checkSemanticHit(t, headers(t, ir.GetHeaders()), "application/json")
}

func TestSemanticAnswerGone(t *testing.T) {
	env := newSemanticEnv(t)
	// An entry whose answer key is not in the exact cache.
	body := chat("gpt-4o-mini", "", user("What is the capital of Vietnam?"))
	masked, text, err := maskLastUserText([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	key, err := cache.BuildKey(masked, "gpt-4o-mini", "global", env.srv.cachePolicy.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.ix.Add(t.Context(), key.ID, text, "x1:gone"); err != nil {
		t.Fatal(err)
	}
	miss(t, env.testEnv, chat("gpt-4o-mini", "", user("what is the capital of vietnam")),
		"application/json", cachedJSON)
}

func TestMaskLastUserText(t *testing.T) {
	tests := []struct {
		name, body, text string
		ok               bool
	}{
		{"string", chat("m", "", user("Hi there")), "Hi there", true},
		{"text parts", chat("m", "", `{"role":"user","content":[{"type":"text","text":"a"},`+
			`{"type":"text","text":"b"}]}`), "a\nb", true},
		{"image part", chat("m", "", `{"role":"user","content":[{"type":"text","text":"a"},`+
			`{"type":"image_url","image_url":{"url":"http://x/y.png"}}]}`), "", false},
		{"last is assistant", chat("m", "", user("Hi"), assistant("Hello")), "", false},
		{"last is tool", chat("m", "", user("Hi"),
			`{"role":"tool","tool_call_id":"c1","content":"42"}`), "", false},
		{"empty text", chat("m", "", user("  ")), "", false},
		{"no messages", `{"model":"m"}`, "", false},
		{"not an object", `[1]`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			masked, text, err := maskLastUserText([]byte(tt.body))
			if (err == nil) != tt.ok {
				t.Fatalf("maskLastUserText() error = %v, want ok %v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if text != tt.text {
				t.Errorf("text = %q, want %q", text, tt.text)
			}
			// Two requests that differ only in the last user text share a partition.
			other := chat("m", "", user("something else entirely"))
			if tt.name == "string" {
				m2, _, err := maskLastUserText([]byte(other))
				if err != nil || string(m2) != string(masked) {
					t.Errorf("masked bodies differ:\n%s\n%s", masked, m2)
				}
			}
		})
	}
}
