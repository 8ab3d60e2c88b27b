package fakeprovider

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/fnv"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode"
)

// Embedding dimensions: the default, and the largest a request may ask for.
const (
	defaultDims = 64
	maxDims     = 4096
)

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	Dimensions     *int            `json:"dimensions"`
	EncodingFormat string          `json:"encoding_format"`
}

type embeddingResponse struct {
	Object string          `json:"object"`
	Data   []embeddingData `json:"data"`
	Model  string          `json:"model"`
	Usage  *embeddingUsage `json:"usage,omitempty"`
}

type embeddingData struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string
}

type embeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request, b Behavior) {
	req, inputs, err := decodeEmbeddings(w, r)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	dims := defaultDims
	if req.Dimensions != nil {
		dims = *req.Dimensions
	}

	resp := embeddingResponse{Object: "list", Model: req.Model}
	var tokens int
	for i, in := range inputs {
		words := tokenize(in)
		tokens += len(strings.Fields(in))
		vec := embed(words, dims)
		d := embeddingData{Object: "embedding", Index: i, Embedding: vec}
		if req.EncodingFormat == "base64" {
			d.Embedding = encodeBase64(vec)
		}
		resp.Data = append(resp.Data, d)
	}
	if !b.OmitUsage {
		resp.Usage = &embeddingUsage{PromptTokens: tokens, TotalTokens: tokens}
	}
	s.logger.LogAttrs(r.Context(), slog.LevelDebug, "embeddings",
		slog.String("model", req.Model), slog.Int("inputs", len(inputs)),
		slog.Int("prompt_tokens", tokens))

	if err := wait(r.Context(), b.TTFT); err != nil {
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// decodeEmbeddings parses and validates an Embeddings body and returns its inputs as texts.
// A token-array input becomes one word per token.
func decodeEmbeddings(w http.ResponseWriter, r *http.Request) (*embeddingRequest, []string,
	error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, nil, err
	}
	var req embeddingRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, &badRequest{msg: "invalid JSON body: " + err.Error()}
	}
	if req.Model == "" {
		return nil, nil, &badRequest{param: "model", msg: "you must provide a model parameter"}
	}
	if d := req.Dimensions; d != nil && (*d < 1 || *d > maxDims) {
		return nil, nil, &badRequest{param: "dimensions",
			msg: "dimensions must be between 1 and " + strconv.Itoa(maxDims)}
	}
	switch req.EncodingFormat {
	case "", "float", "base64":
	default:
		return nil, nil, &badRequest{param: "encoding_format",
			msg: `encoding_format must be "float" or "base64"`}
	}
	inputs, err := embeddingInputs(req.Input)
	if err != nil {
		return nil, nil, &badRequest{param: "input", msg: err.Error()}
	}
	return &req, inputs, nil
}

// embeddingInputs accepts the four input forms of the Embeddings API: a string, an array of
// strings, an array of tokens, or an array of token arrays.
func embeddingInputs(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	errEmpty := errors.New("input must be a non-empty string or array")
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, errEmpty
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil, errEmpty
		}
		return []string{one}, nil
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		if len(many) == 0 {
			return nil, errEmpty
		}
		return many, nil
	}
	var tokens []int64
	if json.Unmarshal(raw, &tokens) == nil {
		if len(tokens) == 0 {
			return nil, errEmpty
		}
		return []string{tokensText(tokens)}, nil
	}
	var arrays [][]int64
	if json.Unmarshal(raw, &arrays) == nil && len(arrays) > 0 {
		out := make([]string, len(arrays))
		for i, a := range arrays {
			out[i] = tokensText(a)
		}
		return out, nil
	}
	return nil, errEmpty
}

func tokensText(tokens []int64) string {
	parts := make([]string, len(tokens))
	for i, t := range tokens {
		parts[i] = "#" + strconv.FormatInt(t, 10)
	}
	return strings.Join(parts, " ")
}

// tokenize lower-cases text and splits it into words of letters and digits.
func tokenize(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '#'
	})
}

// embed hashes every word to a signed coordinate and normalises the sum, so texts sharing
// words have a positive cosine similarity and identical texts have similarity 1. A text
// without words gets the first unit vector.
func embed(words []string, dims int) []float32 {
	v := make([]float64, dims)
	for _, w := range words {
		h := fnv.New64a()
		h.Write([]byte(w))
		x := h.Sum64()
		sign := 1.0
		if x>>63 == 1 {
			sign = -1
		}
		v[x%uint64(dims)] += sign
	}
	var norm float64
	for _, f := range v {
		norm += f * f
	}
	out := make([]float32, dims)
	if norm == 0 {
		out[0] = 1
		return out
	}
	norm = math.Sqrt(norm)
	for i, f := range v {
		out[i] = float32(f / norm)
	}
	return out
}

// encodeBase64 encodes a vector as little-endian float32 values, as the API does for
// encoding_format "base64".
func encodeBase64(v []float32) string {
	buf := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(buf)
}
