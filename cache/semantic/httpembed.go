package semantic

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of [HTTPEmbedderConfig].
const (
	DefaultEmbedTimeout = 10 * time.Second
	DefaultEmbedWindow  = 2 * time.Millisecond
	DefaultEmbedBatch   = 64
)

// maxErrorBody bounds how much of an error answer is read for the error message.
const maxErrorBody = 4 << 10

// ErrClosed is returned by [HTTPEmbedder.Embed] after [HTTPEmbedder.Close].
var ErrClosed = errors.New("semantic: embedder closed")

// HTTPEmbedderConfig configures an [HTTPEmbedder].
type HTTPEmbedderConfig struct {
	// BaseURL is the API root that /embeddings is appended to, such as
	// "https://api.openai.com/v1" or "http://127.0.0.1:8000/v1". Required.
	BaseURL string
	// Model is sent as the request's model. Required.
	Model string
	// APIKey, when set, is sent as a bearer token. It is never logged.
	APIKey string
	// Dimensions, when positive, is sent as the request's dimensions (models that can
	// shorten their vectors honour it) and is the embedder's [HTTPEmbedder.Dim] from the
	// start. Otherwise Dim is learned from the first answer.
	Dimensions int
	// Timeout bounds one HTTP call. Zero means [DefaultEmbedTimeout].
	Timeout time.Duration
	// Window is how long the first text of a batch waits for others before the request is
	// sent. Zero means [DefaultEmbedWindow]; a negative value sends every call at once.
	Window time.Duration
	// MaxBatch is the most texts in one request; a full batch is sent at once. Zero means
	// [DefaultEmbedBatch].
	MaxBatch int
	// Client sends the requests. Nil means a client without its own timeout.
	Client *http.Client
	// Logger receives debug messages; nil discards them.
	Logger *slog.Logger
	// Metrics, when set, observes each request's batch size.
	Metrics *Metrics
}

// HTTPEmbedder is an [Embedder] for an OpenAI-compatible POST {BaseURL}/embeddings API.
// Concurrent [HTTPEmbedder.Embed] calls that arrive within the batching window are sent as
// one request, up to MaxBatch texts. It is safe for concurrent use.
type HTTPEmbedder struct {
	cfg    HTTPEmbedderConfig
	url    string
	logger *slog.Logger
	dim    atomic.Int64

	mu      sync.Mutex
	pending []pendingText
	timer   *time.Timer
	closed  bool
	flights sync.WaitGroup
}

var _ Embedder = (*HTTPEmbedder)(nil)

// embedCall is one Embed call waiting for its vectors.
// A call spanning two batches is written by two send goroutines, hence mu.
type embedCall struct {
	mu   sync.Mutex
	out  [][]float32
	left int
	err  error
	done chan struct{}
}

// pendingText is one text of a call waiting to be sent.
type pendingText struct {
	call *embedCall
	i    int
	text string
}

// NewHTTPEmbedder checks cfg and returns an embedder. It sends nothing until the first
// Embed call.
func NewHTTPEmbedder(cfg HTTPEmbedderConfig) (*HTTPEmbedder, error) {
	if cfg.BaseURL == "" || cfg.Model == "" {
		return nil, errors.New("http embedder: BaseURL and Model are required")
	}
	if !strings.HasPrefix(cfg.BaseURL, "http://") && !strings.HasPrefix(cfg.BaseURL, "https://") {
		return nil, fmt.Errorf("http embedder: BaseURL %q is not an http(s) URL", cfg.BaseURL)
	}
	if cfg.Dimensions < 0 || cfg.MaxBatch < 0 || cfg.Timeout < 0 {
		return nil, errors.New("http embedder: Dimensions, MaxBatch and Timeout must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultEmbedTimeout
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultEmbedWindow
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultEmbedBatch
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &HTTPEmbedder{
		cfg:    cfg,
		url:    strings.TrimRight(cfg.BaseURL, "/") + "/embeddings",
		logger: cfg.Logger.With("component", "semantic_embedder"),
	}
	e.dim.Store(int64(cfg.Dimensions))
	return e, nil
}

// Name returns "openai:<model>", with ":<dimensions>" when Dimensions is set.
func (e *HTTPEmbedder) Name() string {
	if e.cfg.Dimensions > 0 {
		return fmt.Sprintf("openai:%s:%d", e.cfg.Model, e.cfg.Dimensions)
	}
	return "openai:" + e.cfg.Model
}

// Dim returns the vector length: Dimensions if set, else the length seen in the first
// answer, or 0 before any answer.
func (e *HTTPEmbedder) Dim() int { return int(e.dim.Load()) }

// Embed returns the vectors of texts. The texts join the current batch; the call returns
// when all its vectors are back, when a request carrying one of them fails, or when ctx is
// done. Cancelling ctx does not cancel the shared request, whose own deadline is Timeout.
func (e *HTTPEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if len(texts) == 0 {
		return nil, nil
	}
	c := &embedCall{out: make([][]float32, len(texts)), left: len(texts),
		done: make(chan struct{})}
	if err := e.enqueue(c, texts); err != nil {
		return nil, err
	}
	select {
	case <-c.done:
		if c.err != nil {
			return nil, c.err
		}
		return c.out, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops accepting calls, sends what is pending and waits for requests in flight.
func (e *HTTPEmbedder) Close() error {
	e.mu.Lock()
	e.closed = true
	e.flushLocked()
	e.mu.Unlock()
	e.flights.Wait()
	return nil
}

func (e *HTTPEmbedder) enqueue(c *embedCall, texts []string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	for i, t := range texts {
		e.pending = append(e.pending, pendingText{call: c, i: i, text: t})
		if len(e.pending) >= e.cfg.MaxBatch {
			e.flushLocked()
		}
	}
	switch {
	case len(e.pending) == 0:
	case e.cfg.Window < 0:
		e.flushLocked()
	case e.timer == nil:
		e.timer = time.AfterFunc(e.cfg.Window, e.flushTimer)
	}
	return nil
}

func (e *HTTPEmbedder) flushTimer() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.timer = nil
	e.flushLocked()
}

// flushLocked sends the pending texts as one request in a new goroutine.
func (e *HTTPEmbedder) flushLocked() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	if len(e.pending) == 0 {
		return
	}
	batch := e.pending
	e.pending = nil
	e.flights.Add(1)
	go func() {
		defer e.flights.Done()
		e.send(batch)
	}()
}

// send performs one request and delivers its vectors or its error to every waiting call.
func (e *HTTPEmbedder) send(batch []pendingText) {
	texts := make([]string, len(batch))
	for i, p := range batch {
		texts[i] = p.text
	}
	if e.cfg.Metrics != nil {
		e.cfg.Metrics.EmbedBatchSize.Observe(float64(len(texts)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.Timeout)
	defer cancel()
	vecs, err := e.request(ctx, texts)
	if err != nil {
		e.logger.LogAttrs(ctx, slog.LevelDebug, "embeddings request failed",
			slog.Int("texts", len(texts)), slog.Any("err", err))
	}
	for i, p := range batch {
		c := p.call
		c.mu.Lock()
		if err != nil {
			c.err = err
		} else {
			c.out[p.i] = vecs[i]
		}
		c.left--
		if c.left == 0 {
			close(c.done)
		}
		c.mu.Unlock()
	}
}

type embeddingsRequest struct {
	Model          string   `json:"model"`
	Input          []string `json:"input"`
	Dimensions     int      `json:"dimensions,omitempty"`
	EncodingFormat string   `json:"encoding_format"`
}

type embeddingsResponse struct {
	Data []struct {
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	} `json:"data"`
}

// request sends texts and returns their vectors in order.
func (e *HTTPEmbedder) request(ctx context.Context, texts []string) ([][]float32, error) {
	body, err := json.Marshal(embeddingsRequest{Model: e.cfg.Model, Input: texts,
		Dimensions: e.cfg.Dimensions, EncodingFormat: "float"})
	if err != nil {
		return nil, fmt.Errorf("encoding embeddings request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building embeddings request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if e.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+e.cfg.APIKey)
	}
	resp, err := e.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("embeddings request: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, &HTTPError{StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(msg))}
	}
	var out embeddingsResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decoding embeddings answer: %w", err)
	}
	return e.order(out, len(texts))
}

// order checks an answer and returns its vectors in input order.
func (e *HTTPEmbedder) order(out embeddingsResponse, n int) ([][]float32, error) {
	if len(out.Data) != n {
		return nil, fmt.Errorf("embeddings answer has %d vectors for %d inputs", len(out.Data), n)
	}
	vecs := make([][]float32, n)
	dim := e.Dim()
	for _, d := range out.Data {
		if d.Index < 0 || d.Index >= n || vecs[d.Index] != nil {
			return nil, fmt.Errorf("embeddings answer has a bad or repeated index %d", d.Index)
		}
		if len(d.Embedding) == 0 || (dim > 0 && len(d.Embedding) != dim) {
			return nil, fmt.Errorf("embeddings answer has a vector of length %d, want %d",
				len(d.Embedding), dim)
		}
		if dim == 0 {
			dim = len(d.Embedding)
			e.dim.CompareAndSwap(0, int64(dim))
		}
		normalize(d.Embedding)
		vecs[d.Index] = d.Embedding
	}
	return vecs, nil
}

// HTTPError is an embeddings answer with a status other than 200.
type HTTPError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Body is the start of the answer body, which for OpenAI-compatible APIs holds a JSON
	// error object.
	Body string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("embeddings request: status %d: %s", e.StatusCode, e.Body)
}
