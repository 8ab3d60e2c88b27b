// Package fakeprovider is a deterministic OpenAI-compatible model provider for end-to-end
// tests, benchmarks and the demo stack.
//
// It serves Chat Completions (plain and SSE streaming) and Embeddings under any path prefix,
// so base URLs such as http://host:port/v1 and http://host:port/openai/v1 both work. The same
// request always gets the same answer: content words are chosen from a small vocabulary by
// hashing the model and the messages, and nothing random is included. Latency, throughput,
// failures and the presence of usage are controlled by a [Behavior], which can be changed at
// runtime with [Server.SetBehavior] or, from another process, with POST /fake/behavior.
//
// Token counting rules (documented so tests can compute expected values):
//   - prompt_tokens of a chat request is the number of whitespace-separated words in the text
//     of all message contents (string contents and "text" parts), summed over all messages;
//   - completion_tokens is the number of generated words (or tool-call argument words);
//   - prompt_tokens of an embeddings request is the number of whitespace-separated words of
//     all inputs (a token-array input counts one token per element).
package fakeprovider

import (
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Paths of the control endpoints. They are matched exactly, without a prefix.
const (
	statsPath    = "/fake/stats"
	behaviorPath = "/fake/behavior"
)

// Suffixes of the model endpoints. Any path ending in one of them is served.
const (
	chatSuffix       = "/chat/completions"
	embeddingsSuffix = "/embeddings"
)

// Header names set or read by the server.
const (
	// HeaderProvider is set on every answer to the server's name.
	HeaderProvider = "x-fake-provider"
	// HeaderStatus, when present on a request, forces the answer to be an error with that
	// HTTP status (400-599). 429 answers carry Retry-After: 1.
	HeaderStatus = "x-fake-status"
)

// maxBodyBytes bounds request bodies so a bad client cannot exhaust memory.
const maxBodyBytes = 8 << 20

// Behavior controls how the server answers. The zero value answers at once, never fails and
// reports usage.
type Behavior struct {
	// TTFT is the delay before the first byte of an answer (and so before the first SSE
	// chunk). Negative values count as zero.
	TTFT time.Duration
	// TokensPerSecond paces generated words: SSE chunks are spaced 1/TokensPerSecond apart,
	// and a non-stream answer waits for all its words. Zero or less means no pacing.
	TokensPerSecond float64
	// ErrorRate is the fraction of model calls answered 500. The sequence is deterministic:
	// call k fails when the count of failures so far is below floor(k*ErrorRate), so 0.5
	// fails every second call and 1 fails all calls. Values are clamped to [0, 1].
	ErrorRate float64
	// RateLimitRate is the fraction of model calls answered 429 with Retry-After: 1, using
	// the same deterministic rule as ErrorRate. A call chosen by both rules gets 500 and the
	// 429 moves to the next call. Values are clamped to [0, 1].
	RateLimitRate float64
	// OmitUsage removes usage from every answer, including the usage chunk of a stream that
	// asked for stream_options.include_usage.
	OmitUsage bool
}

// behaviorJSON is the wire form of [Behavior] used by the control endpoint; durations are Go
// duration strings such as "150ms".
type behaviorJSON struct {
	TTFT            string  `json:"ttft"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	ErrorRate       float64 `json:"error_rate"`
	RateLimitRate   float64 `json:"rate_limit_rate"`
	OmitUsage       bool    `json:"omit_usage"`
}

// Options configures a [Server].
type Options struct {
	// Name identifies the server: it is the system_fingerprint of every completion and the
	// value of the x-fake-provider header. Empty means "fake".
	Name string
	// Behavior is the initial behavior.
	Behavior Behavior
	// Logger receives per-request Debug records (never message contents). Nil discards.
	Logger *slog.Logger
}

// Server is the fake provider. It implements [http.Handler] and is safe for concurrent use.
type Server struct {
	name   string
	logger *slog.Logger

	mu       sync.Mutex
	behavior Behavior
	seq      int64 // model calls since the behavior was last set
	errors   int64 // 500s injected by ErrorRate since then
	limits   int64 // 429s injected by RateLimitRate since then
	byPath   map[string]int64
	lastHdr  http.Header // headers of the last model call

	calls atomic.Int64
}

var _ http.Handler = (*Server)(nil)

// New returns a server configured by opts.
func New(opts Options) *Server {
	name := opts.Name
	if name == "" {
		name = "fake"
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		name:     name,
		logger:   logger.With("component", "fakeprovider", "provider", name),
		behavior: normalize(opts.Behavior),
		byPath:   make(map[string]int64),
	}
}

// Name returns the server's name.
func (s *Server) Name() string { return s.name }

// SetBehavior replaces the behavior. It also restarts the deterministic failure sequence, so
// the first call after SetBehavior is call 1 of the new sequence.
func (s *Server) SetBehavior(b Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behavior = normalize(b)
	s.seq, s.errors, s.limits = 0, 0, 0
}

// Behavior returns the current behavior.
func (s *Server) Behavior() Behavior {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.behavior
}

// Calls returns the number of chat completions and embeddings calls answered, whatever
// their status.
func (s *Server) Calls() int64 { return s.calls.Load() }

// CallsByPath returns the number of model calls per request path (for example
// "/v1/chat/completions"). The caller owns the returned map.
func (s *Server) CallsByPath() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.byPath))
	for k, v := range s.byPath {
		out[k] = v
	}
	return out
}

// ServeHTTP dispatches to the model and control endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(HeaderProvider, s.name)
	switch {
	case r.URL.Path == statsPath:
		s.serveStats(w, r)
	case r.URL.Path == behaviorPath:
		s.serveBehavior(w, r)
	case strings.HasSuffix(r.URL.Path, chatSuffix):
		s.serveModel(w, r, s.chat)
	case strings.HasSuffix(r.URL.Path, embeddingsSuffix):
		s.serveModel(w, r, s.embeddings)
	default:
		writeError(w, http.StatusNotFound, "not_found_error", "",
			"unknown path "+strconv.Quote(r.URL.Path))
	}
}

// LastHeaders returns the request headers of the last chat or embeddings call, or nil
// before the first one. Tests use it to see which credential reached the provider.
func (s *Server) LastHeaders() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHdr.Clone()
}

// serveModel counts the call, applies error injection and then runs the endpoint handler
// with the behavior in force when the call arrived.
func (s *Server) serveModel(w http.ResponseWriter, r *http.Request,
	handle func(http.ResponseWriter, *http.Request, Behavior)) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "",
			"method "+r.Method+" not allowed")
		return
	}
	s.calls.Add(1)
	s.mu.Lock()
	s.lastHdr = r.Header.Clone()
	s.mu.Unlock()
	b, injected := s.nextCall(r.URL.Path)

	if h := r.Header.Get(HeaderStatus); h != "" {
		code, err := strconv.Atoi(h)
		if err != nil || code < 400 || code > 599 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "",
				HeaderStatus+" must be an HTTP status between 400 and 599")
			return
		}
		injected = code
	}
	if injected != 0 {
		s.logger.LogAttrs(r.Context(), slog.LevelDebug, "injected error",
			slog.String("path", r.URL.Path), slog.Int("code", injected))
		writeInjected(w, injected)
		return
	}
	handle(w, r, b)
}

// nextCall records a model call and decides whether the behavior's failure rates pick it.
// It returns the behavior to use and the status to inject, or 0.
func (s *Server) nextCall(path string) (Behavior, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byPath[path]++
	s.seq++
	b := s.behavior
	if s.errors < int64(math.Floor(float64(s.seq)*b.ErrorRate)) {
		s.errors++
		return b, http.StatusInternalServerError
	}
	if s.limits < int64(math.Floor(float64(s.seq)*b.RateLimitRate)) {
		s.limits++
		return b, http.StatusTooManyRequests
	}
	return b, 0
}

// writeInjected answers with an OpenAI-style error for an injected status.
func writeInjected(w http.ResponseWriter, code int) {
	switch code {
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
		writeError(w, code, "rate_limit_error", "rate_limit_exceeded",
			"injected rate limit")
	case http.StatusServiceUnavailable:
		writeError(w, code, "server_error", "service_unavailable", "injected overload")
	default:
		writeError(w, code, "server_error", "", "injected error "+strconv.Itoa(code))
	}
}

// stats is the body of GET /fake/stats.
type stats struct {
	Name   string           `json:"name"`
	Calls  int64            `json:"calls"`
	ByPath map[string]int64 `json:"by_path"`
}

func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "",
			"method "+r.Method+" not allowed")
		return
	}
	writeJSON(w, http.StatusOK, stats{Name: s.name, Calls: s.Calls(), ByPath: s.CallsByPath()})
}

// serveBehavior reads (GET) or replaces (POST) the behavior. A POST body replaces the whole
// behavior: omitted fields become zero.
func (s *Server) serveBehavior(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, toJSON(s.Behavior()))
	case http.MethodPost:
		var bj behaviorJSON
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&bj); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "",
				"decoding behavior: "+err.Error())
			return
		}
		b, err := fromJSON(bj)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "", err.Error())
			return
		}
		s.SetBehavior(b)
		s.logger.Info("behavior changed", slog.String("ttft", b.TTFT.String()),
			slog.Float64("tokens_per_second", b.TokensPerSecond),
			slog.Float64("error_rate", b.ErrorRate),
			slog.Float64("rate_limit_rate", b.RateLimitRate),
			slog.Bool("omit_usage", b.OmitUsage))
		writeJSON(w, http.StatusOK, toJSON(s.Behavior()))
	default:
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "",
			"method "+r.Method+" not allowed")
	}
}

func toJSON(b Behavior) behaviorJSON {
	return behaviorJSON{
		TTFT:            b.TTFT.String(),
		TokensPerSecond: b.TokensPerSecond,
		ErrorRate:       b.ErrorRate,
		RateLimitRate:   b.RateLimitRate,
		OmitUsage:       b.OmitUsage,
	}
}

// fromJSON converts and validates the wire form. Unlike [Server.SetBehavior], which clamps,
// the control endpoint rejects out-of-range values so a typo in a script is noticed.
func fromJSON(bj behaviorJSON) (Behavior, error) {
	b := Behavior{
		TokensPerSecond: bj.TokensPerSecond,
		ErrorRate:       bj.ErrorRate,
		RateLimitRate:   bj.RateLimitRate,
		OmitUsage:       bj.OmitUsage,
	}
	if bj.TTFT != "" {
		d, err := time.ParseDuration(bj.TTFT)
		if err != nil {
			return Behavior{}, err
		}
		b.TTFT = d
	}
	switch {
	case b.TTFT < 0:
		return Behavior{}, errString("ttft must not be negative")
	case b.TokensPerSecond < 0 || math.IsNaN(b.TokensPerSecond):
		return Behavior{}, errString("tokens_per_second must not be negative")
	case !inUnit(b.ErrorRate):
		return Behavior{}, errString("error_rate must be within [0, 1]")
	case !inUnit(b.RateLimitRate):
		return Behavior{}, errString("rate_limit_rate must be within [0, 1]")
	}
	return b, nil
}

type errString string

func (e errString) Error() string { return string(e) }

func inUnit(f float64) bool { return f >= 0 && f <= 1 }

// normalize clamps b into its valid ranges.
func normalize(b Behavior) Behavior {
	b.TTFT = max(b.TTFT, 0)
	if !(b.TokensPerSecond > 0) || math.IsInf(b.TokensPerSecond, 1) {
		b.TokensPerSecond = 0
	}
	b.ErrorRate = clampUnit(b.ErrorRate)
	b.RateLimitRate = clampUnit(b.RateLimitRate)
	return b
}

func clampUnit(f float64) float64 {
	if !(f > 0) {
		return 0
	}
	return min(f, 1)
}

// apiError is the OpenAI error envelope.
type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// writeError writes an OpenAI-style error. Empty param or code become JSON null.
func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	writeErrorParam(w, status, typ, code, "", msg)
}

func writeErrorParam(w http.ResponseWriter, status int, typ, code, param, msg string) {
	body := apiErrorBody{Message: msg, Type: typ}
	if param != "" {
		body.Param = &param
	}
	if code != "" {
		body.Code = &code
	}
	writeJSON(w, status, apiError{Error: body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types are marshalled here, so this cannot happen with valid code.
		http.Error(w, "encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
