package semantic

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phochat/phogate/test/fakeprovider"
)

// embeddingsServer answers /v1/embeddings with a vector whose first coordinate is the
// input's length, and counts requests and inputs.
type embeddingsServer struct {
	requests atomic.Int64
	inputs   atomic.Int64
	status   int
}

func (s *embeddingsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if r.URL.Path != "/v1/embeddings" || r.Header.Get("Authorization") != "Bearer sk-test" {
		http.Error(w, "bad path or key", http.StatusNotFound)
		return
	}
	if s.status != 0 {
		http.Error(w, `{"error":{"message":"overloaded"}}`, s.status)
		return
	}
	var req struct {
		Input []string `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.inputs.Add(int64(len(req.Input)))
	type item struct {
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	}
	var out struct {
		Data []item `json:"data"`
	}
	// Answer in reverse order: clients must use the index field.
	for i := len(req.Input) - 1; i >= 0; i-- {
		out.Data = append(out.Data, item{i, []float32{float32(len(req.Input[i])), 1, 0}})
	}
	_ = json.NewEncoder(w).Encode(out)
}

func newTestEmbedder(t *testing.T, url string, cfg HTTPEmbedderConfig) *HTTPEmbedder {
	t.Helper()
	cfg.BaseURL, cfg.Model, cfg.APIKey = url+"/v1", "test-embed", "sk-test"
	e, err := NewHTTPEmbedder(cfg)
	if err != nil {
		t.Fatalf("NewHTTPEmbedder: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestHTTPEmbedderCoalesces(t *testing.T) {
	srv := &embeddingsServer{}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	// A window far longer than the test means only a full batch is sent.
	e := newTestEmbedder(t, ts.URL, HTTPEmbedderConfig{Window: time.Hour, MaxBatch: 8,
		Metrics: NewMetrics(nil)})
	ctx := testContext(t)

	texts := []string{"a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg", "hhhhhhhh"}
	var wg sync.WaitGroup
	got := make([][]float32, len(texts))
	errs := make([]error, len(texts))
	for i, text := range texts {
		wg.Go(func() {
			vs, err := e.Embed(ctx, []string{text})
			if err == nil {
				got[i] = vs[0]
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Embed(%q): %v", texts[i], err)
		}
		// The server answers (len, 1, 0); the embedder normalises it.
		want := []float32{float32(len(texts[i])), 1, 0}
		if Cosine(got[i], want) < 0.9999 {
			t.Errorf("Embed(%q) = %v, want the direction of %v", texts[i], got[i], want)
		}
	}
	if got := srv.requests.Load(); got != 1 {
		t.Errorf("requests = %d, want 1 for %d concurrent calls", got, len(texts))
	}
	if got := e.Dim(); got != 3 {
		t.Errorf("Dim() = %d, want 3 after the first answer", got)
	}
}

func TestHTTPEmbedderSplitsLargeCalls(t *testing.T) {
	srv := &embeddingsServer{}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	e := newTestEmbedder(t, ts.URL, HTTPEmbedderConfig{Window: -1, MaxBatch: 4})
	vs, err := e.Embed(testContext(t), []string{"1", "22", "333", "4444", "55555", "666666"})
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	if len(vs) != 6 || vs[5] == nil {
		t.Fatalf("Embed returned %d vectors, want 6", len(vs))
	}
	if got := srv.requests.Load(); got != 2 {
		t.Errorf("requests = %d, want 2 (batches of 4 and 2)", got)
	}
}

func TestHTTPEmbedderError(t *testing.T) {
	ts := httptest.NewServer(&embeddingsServer{status: http.StatusServiceUnavailable})
	t.Cleanup(ts.Close)
	e := newTestEmbedder(t, ts.URL, HTTPEmbedderConfig{Window: -1})
	_, err := e.Embed(testContext(t), []string{"x"})
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("Embed error = %v, want an HTTPError with status 503", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := e.Embed(testContext(t), []string{"x"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Embed after Close = %v, want ErrClosed", err)
	}
}

func TestNewHTTPEmbedderBadConfig(t *testing.T) {
	for _, cfg := range []HTTPEmbedderConfig{
		{Model: "m"},
		{BaseURL: "localhost:8080", Model: "m"},
		{BaseURL: "http://x", Model: "m", MaxBatch: -1},
	} {
		if _, err := NewHTTPEmbedder(cfg); err == nil {
			t.Errorf("NewHTTPEmbedder(%+v) succeeded, want an error", cfg)
		}
	}
}

// TestHTTPEmbedderFakeProvider runs an index on the fake provider's embeddings.
func TestHTTPEmbedderFakeProvider(t *testing.T) {
	ctx := testContext(t)
	run, err := fakeprovider.Listen(ctx, "127.0.0.1:0", fakeprovider.New(fakeprovider.Options{}))
	if err != nil {
		t.Fatalf("fakeprovider.Listen: %v", err)
	}
	t.Cleanup(func() { run.Close() })
	e, err := NewHTTPEmbedder(HTTPEmbedderConfig{BaseURL: "http://" + run.Addr() + "/v1",
		Model: "fake-embed", Dimensions: 128})
	if err != nil {
		t.Fatalf("NewHTTPEmbedder: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	ix := newTestIndex(t, Config{Embedder: e})
	if _, err := ix.Add(ctx, "p", "How do I cook pho?", "pho"); err != nil {
		t.Fatalf("Add: %v", err)
	}
	m, ok, reason := ix.Lookup(ctx, "p", "how do I cook pho", 0)
	if !ok || m.AnswerKey != "pho" {
		t.Errorf("Lookup = %+v, %v, %v; want a hit on pho", m, ok, reason)
	}
}
