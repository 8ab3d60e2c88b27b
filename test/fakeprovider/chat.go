package fakeprovider

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// created is the fixed creation time of every answer, so equal requests get byte-identical
// answers.
const created = 1_700_000_000

// Generated answers have between minWords and minWords+wordSpread-1 words.
const (
	minWords   = 5
	wordSpread = 8
)

// toolTrigger in the last user message makes the server call the first function tool.
const toolTrigger = "call_tool"

// vocabulary is the pool that generated words come from.
var vocabulary = [...]string{
	"alpha", "bravo", "cedar", "delta", "ember", "fjord", "gale", "harbor",
	"iris", "jade", "kelp", "lumen", "maple", "nova", "orbit", "pebble",
	"quartz", "river", "sable", "tundra", "umber", "vale", "willow", "xenon",
	"yarrow", "zephyr", "amber", "basalt", "cobalt", "dune", "echo", "flint",
}

// chatRequest holds the fields of a Chat Completions request that the server reads.
type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	MaxTokens           *int64         `json:"max_tokens"`
	MaxCompletionTokens *int64         `json:"max_completion_tokens"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	Tools               []toolParam    `json:"tools"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type toolParam struct {
	Type     string `json:"type"`
	Function *struct {
		Name string `json:"name"`
	} `json:"function"`
}

// badRequest is a validation failure reported as a 400 with an OpenAI error body.
type badRequest struct {
	param string
	msg   string
}

func (e *badRequest) Error() string { return e.msg }

// answer is what the server generates for one chat request.
type answer struct {
	id           string
	words        []string // content words; nil for a tool call
	toolName     string   // non-empty for a tool call
	toolCallID   string
	toolArgs     string
	promptTokens int
	outputTokens int
	finishReason string
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, b Behavior) {
	req, texts, err := decodeChat(w, r)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	a := generate(req, texts)
	s.logger.LogAttrs(r.Context(), slog.LevelDebug, "chat completion",
		slog.String("model", req.Model), slog.Bool("stream", req.Stream),
		slog.Int("prompt_tokens", a.promptTokens), slog.Int("completion_tokens", a.outputTokens))

	if req.Stream {
		includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !b.OmitUsage
		s.streamChat(w, r, b, req.Model, a, includeUsage)
		return
	}

	if err := wait(r.Context(), b.TTFT+pace(b, a.outputTokens)); err != nil {
		return
	}
	writeJSON(w, http.StatusOK, s.completion(req.Model, a, b.OmitUsage))
}

// decodeChat parses and validates a Chat Completions body. It returns the text of each
// message in order.
func decodeChat(w http.ResponseWriter, r *http.Request) (*chatRequest, []string, error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, nil, err
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, &badRequest{msg: "invalid JSON body: " + err.Error()}
	}
	if req.Model == "" {
		return nil, nil, &badRequest{param: "model", msg: "you must provide a model parameter"}
	}
	if len(req.Messages) == 0 {
		return nil, nil, &badRequest{param: "messages", msg: "messages must be a non-empty array"}
	}
	for _, p := range []struct {
		name string
		v    *int64
	}{{"max_tokens", req.MaxTokens}, {"max_completion_tokens", req.MaxCompletionTokens}} {
		if p.v != nil && *p.v < 1 {
			return nil, nil, &badRequest{param: p.name, msg: p.name + " must be at least 1"}
		}
	}
	texts := make([]string, len(req.Messages))
	for i, m := range req.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		if m.Role == "" {
			return nil, nil, &badRequest{param: param + ".role", msg: "message role is required"}
		}
		t, err := messageText(m.Content)
		if err != nil {
			return nil, nil, &badRequest{param: param + ".content", msg: err.Error()}
		}
		texts[i] = t
	}
	return &req, texts, nil
}

// readBody reads a bounded request body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxBodyBytes)); err != nil {
		return nil, &badRequest{msg: "reading body: " + err.Error()}
	}
	return buf.Bytes(), nil
}

// messageText returns the text of a message content: a string, null, or an array of parts
// whose "text" parts are joined with spaces. Other part types contribute nothing.
func messageText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("invalid content string: %w", err)
		}
		return s, nil
	case '[':
		var parts []contentPart
		if err := json.Unmarshal(raw, &parts); err != nil {
			return "", fmt.Errorf("invalid content parts: %w", err)
		}
		var texts []string
		for _, p := range parts {
			if p.Type == "text" {
				texts = append(texts, p.Text)
			}
		}
		return strings.Join(texts, " "), nil
	default:
		return "", errors.New("content must be a string, an array of parts or null")
	}
}

func writeBadRequest(w http.ResponseWriter, err error) {
	var br *badRequest
	if errors.As(err, &br) {
		writeErrorParam(w, http.StatusBadRequest, "invalid_request_error", "", br.param, br.msg)
		return
	}
	writeError(w, http.StatusBadRequest, "invalid_request_error", "", err.Error())
}

// generate derives the answer from the request alone.
func generate(req *chatRequest, texts []string) answer {
	h := sha256.New()
	h.Write([]byte(req.Model))
	var prompt int
	for i, m := range req.Messages {
		h.Write([]byte{0})
		h.Write([]byte(m.Role))
		h.Write([]byte{0})
		h.Write([]byte(texts[i]))
		prompt += len(strings.Fields(texts[i]))
	}
	sum := h.Sum(nil)
	rng := splitmix(binary.BigEndian.Uint64(sum[:8]))
	a := answer{id: "chatcmpl-fake-" + hex.EncodeToString(sum[8:20]), promptTokens: prompt}

	if name := toolToCall(req, texts); name != "" {
		args := pickWords(&rng, 1+int(rng.next()%3))
		a.toolName = name
		a.toolCallID = "call_" + hex.EncodeToString(sum[20:32])
		a.toolArgs = fmt.Sprintf(`{"query":%q}`, strings.Join(args, " "))
		a.outputTokens = len(args)
		a.finishReason = "tool_calls"
		return a
	}

	a.words = pickWords(&rng, minWords+int(rng.next()%wordSpread))
	a.finishReason = "stop"
	if limit, ok := wordLimit(req); ok && int64(len(a.words)) > limit {
		a.words = a.words[:limit]
		a.finishReason = "length"
	}
	a.outputTokens = len(a.words)
	return a
}

// wordLimit returns the smaller of max_tokens and max_completion_tokens, if any is set.
func wordLimit(req *chatRequest) (int64, bool) {
	switch {
	case req.MaxTokens != nil && req.MaxCompletionTokens != nil:
		return min(*req.MaxTokens, *req.MaxCompletionTokens), true
	case req.MaxTokens != nil:
		return *req.MaxTokens, true
	case req.MaxCompletionTokens != nil:
		return *req.MaxCompletionTokens, true
	}
	return 0, false
}

// toolToCall returns the first function tool's name when the last user message asks for a
// tool call, and "" otherwise.
func toolToCall(req *chatRequest, texts []string) string {
	last := -1
	for i, m := range req.Messages {
		if m.Role == "user" {
			last = i
		}
	}
	if last < 0 || !strings.Contains(texts[last], toolTrigger) {
		return ""
	}
	for _, t := range req.Tools {
		if t.Function != nil && t.Function.Name != "" && (t.Type == "" || t.Type == "function") {
			return t.Function.Name
		}
	}
	return ""
}

// splitmix is a tiny deterministic generator (SplitMix64) seeded from the request hash.
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func pickWords(rng *splitmix, n int) []string {
	words := make([]string, n)
	for i := range words {
		words[i] = vocabulary[rng.next()%uint64(len(vocabulary))]
	}
	return words
}

// pace is how long generating n words takes at the behavior's rate.
func pace(b Behavior, n int) time.Duration {
	if b.TokensPerSecond <= 0 || n <= 0 {
		return 0
	}
	return time.Duration(float64(n) / b.TokensPerSecond * float64(time.Second))
}

// wait blocks for d or until ctx is done, whichever comes first.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Wire types of Chat Completions answers.
type (
	completion struct {
		ID                string             `json:"id"`
		Object            string             `json:"object"`
		Created           int64              `json:"created"`
		Model             string             `json:"model"`
		SystemFingerprint string             `json:"system_fingerprint"`
		Choices           []completionChoice `json:"choices"`
		Usage             *usage             `json:"usage,omitempty"`
	}
	completionChoice struct {
		Index        int             `json:"index"`
		Message      message         `json:"message"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason string          `json:"finish_reason"`
	}
	message struct {
		Role      string         `json:"role"`
		Content   *string        `json:"content"`
		Refusal   *string        `json:"refusal"`
		ToolCalls []toolCallWire `json:"tool_calls,omitempty"`
	}
	toolCallWire struct {
		Index    *int         `json:"index,omitempty"`
		ID       string       `json:"id,omitempty"`
		Type     string       `json:"type,omitempty"`
		Function functionWire `json:"function"`
	}
	functionWire struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	}
	usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	}
	chunk struct {
		ID                string          `json:"id"`
		Object            string          `json:"object"`
		Created           int64           `json:"created"`
		Model             string          `json:"model"`
		SystemFingerprint string          `json:"system_fingerprint"`
		Choices           []chunkChoice   `json:"choices"`
		Usage             json.RawMessage `json:"usage,omitempty"`
	}
	chunkChoice struct {
		Index        int             `json:"index"`
		Delta        delta           `json:"delta"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason *string         `json:"finish_reason"`
	}
	delta struct {
		Role      string         `json:"role,omitempty"`
		Content   *string        `json:"content,omitempty"`
		ToolCalls []toolCallWire `json:"tool_calls,omitempty"`
	}
)

var jsonNull = json.RawMessage("null")

func (a answer) usage() *usage {
	return &usage{
		PromptTokens:     a.promptTokens,
		CompletionTokens: a.outputTokens,
		TotalTokens:      a.promptTokens + a.outputTokens,
	}
}

func (s *Server) completion(model string, a answer, omitUsage bool) completion {
	msg := message{Role: "assistant"}
	if a.toolName != "" {
		msg.ToolCalls = []toolCallWire{{
			ID: a.toolCallID, Type: "function",
			Function: functionWire{Name: a.toolName, Arguments: a.toolArgs},
		}}
	} else {
		content := strings.Join(a.words, " ")
		msg.Content = &content
	}
	c := completion{
		ID: a.id, Object: "chat.completion", Created: created, Model: model,
		SystemFingerprint: s.name,
		Choices: []completionChoice{{
			Message: msg, Logprobs: jsonNull, FinishReason: a.finishReason,
		}},
	}
	if !omitUsage {
		c.Usage = a.usage()
	}
	return c
}

// streamChat writes the answer as server-sent events: a role chunk, one chunk per word (or
// the tool call), a chunk with the finish reason, the usage chunk when asked for, and
// [DONE]. It stops early when the client goes away.
func (s *Server) streamChat(w http.ResponseWriter, r *http.Request, b Behavior, model string,
	a answer, includeUsage bool) {
	ctx := r.Context()
	if err := wait(ctx, b.TTFT); err != nil {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w, rc: http.NewResponseController(w)}

	base := chunk{
		ID: a.id, Object: "chat.completion.chunk", Created: created, Model: model,
		SystemFingerprint: s.name,
	}
	if includeUsage {
		// With include_usage, OpenAI sends "usage": null on every chunk but the last.
		base.Usage = jsonNull
	}
	send := func(d delta, finish *string) error {
		c := base
		c.Choices = []chunkChoice{{Delta: d, Logprobs: jsonNull, FinishReason: finish}}
		return sw.event(c)
	}

	empty := ""
	if err := send(delta{Role: "assistant", Content: &empty}, nil); err != nil {
		return
	}
	if err := s.streamBody(ctx, sw, b, a, send); err != nil {
		s.logger.LogAttrs(ctx, slog.LevelDebug, "stream ended early", slog.Any("err", err))
		return
	}
	if err := send(delta{}, &a.finishReason); err != nil {
		return
	}
	if includeUsage {
		c := base
		c.Choices = []chunkChoice{}
		u, _ := json.Marshal(a.usage())
		c.Usage = u
		if err := sw.event(c); err != nil {
			return
		}
	}
	_ = sw.raw("[DONE]")
}

// streamBody sends the content words, paced, or the tool call.
func (s *Server) streamBody(ctx context.Context, sw *sseWriter, b Behavior, a answer,
	send func(delta, *string) error) error {
	if a.toolName != "" {
		zero := 0
		first := delta{ToolCalls: []toolCallWire{{
			Index: &zero, ID: a.toolCallID, Type: "function",
			Function: functionWire{Name: a.toolName},
		}}}
		if err := send(first, nil); err != nil {
			return err
		}
		if err := wait(ctx, pace(b, a.outputTokens)); err != nil {
			return err
		}
		args := delta{ToolCalls: []toolCallWire{{
			Index: &zero, Function: functionWire{Arguments: a.toolArgs},
		}}}
		return send(args, nil)
	}
	step := pace(b, 1)
	for i, word := range a.words {
		if i > 0 {
			if err := wait(ctx, step); err != nil {
				return err
			}
			word = " " + word
		}
		if err := send(delta{Content: &word}, nil); err != nil {
			return err
		}
	}
	return nil
}

// sseWriter writes "data:" events and flushes each one.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (sw *sseWriter) event(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding chunk: %w", err)
	}
	return sw.raw(string(b))
}

func (sw *sseWriter) raw(data string) error {
	if _, err := fmt.Fprintf(sw.w, "data: %s\n\n", data); err != nil {
		return fmt.Errorf("writing event: %w", err)
	}
	if err := sw.rc.Flush(); err != nil {
		return fmt.Errorf("flushing event: %w", err)
	}
	return nil
}
