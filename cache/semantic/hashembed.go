package semantic

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// Embedder turns texts into vectors whose cosine similarity says how alike the texts are.
type Embedder interface {
	// Embed returns one vector of length Dim for each text, in order. The caller owns the
	// returned slices. Cancelling ctx abandons the call.
	Embed(ctx context.Context, texts []string) ([][]float32, error)
	// Name identifies the embedding space: vectors from embedders with different names are
	// never compared.
	Name() string
	// Dim is the length of every vector.
	Dim() int
}

// DefaultHashDim is the dimension of the built-in embedder when none is given.
const DefaultHashDim = 256

// Feature weights of the built-in embedder, tuned on the QQP and vnPara developer sets.
const (
	weightWord     = 1.0 // a content word (stemmed)
	weightQuestion = 0.5 // a question word ("how", "why")
	weightStop     = 0.3 // another stop word
	weightBigram   = 0.6 // two consecutive content words
	weightChars    = 0.5 // character 4-grams of a word, shared over its grams
	charGram       = 4
)

// HashEmbedder is the built-in [Embedder]. It needs no model: it hashes text features into a
// fixed-dimension vector (signed feature hashing) and normalises it to unit length.
//
// Features, after NFC, lower-casing, English contractions spelled out and Vietnamese tone
// marks put in one place: stemmed words (stop words, English and Vietnamese, weigh little),
// pairs of consecutive content words (Vietnamese words are often two syllables), and
// character 4-grams of each content word. Longer, rarer-looking words weigh a little more.
//
// What it catches: reordered words, punctuation and case, plural and tense changes, typos in
// long words, added or dropped filler words, and in general two texts that share most of
// their content words. What it misses: synonyms and paraphrases with no shared words ("how do
// I cook pho" and "pho recipe" may score low), and anything across languages. Word overlap is
// also why it scores some different questions high ("jobs in Atlanta" and "jobs in Toronto");
// the [Guard] catches the common cases of those.
//
// A HashEmbedder is safe for concurrent use.
type HashEmbedder struct {
	dim int
}

var _ Embedder = (*HashEmbedder)(nil)

// NewHashEmbedder returns a built-in embedder of dimension dim (zero means [DefaultHashDim]).
func NewHashEmbedder(dim int) (*HashEmbedder, error) {
	if dim == 0 {
		dim = DefaultHashDim
	}
	if dim < 16 || dim > 1<<16 {
		return nil, fmt.Errorf("hash embedder dimension %d: want 16..65536", dim)
	}
	return &HashEmbedder{dim: dim}, nil
}

// Name returns "hash-v1-<dim>".
func (e *HashEmbedder) Name() string { return "hash-v1-" + strconv.Itoa(e.dim) }

// Dim returns the vector length.
func (e *HashEmbedder) Dim() int { return e.dim }

// Embed embeds each text. It never fails except when ctx is done.
func (e *HashEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out[i] = e.EmbedText(t)
	}
	return out, nil
}

// EmbedText embeds one text. A text without words gets the zero vector, which is similar to
// nothing.
func (e *HashEmbedder) EmbedText(text string) []float32 {
	v := make([]float32, e.dim)
	var prev string
	for _, t := range tokenize(text) {
		k := stem(t.key)
		switch {
		case questionWords[t.key]:
			e.add(v, "w", k, "", weightQuestion)
			continue
		case stopWords[t.key]:
			e.add(v, "w", k, "", weightStop)
			continue
		}
		w := wordWeight(k)
		e.add(v, "w", k, "", weightWord*w)
		if prev != "" {
			e.add(v, "b", prev, k, weightBigram*w)
		}
		prev = k
		e.addGrams(v, k, weightChars*w)
	}
	normalize(v)
	return v
}

// wordWeight stands in for inverse document frequency, which needs a corpus: short words are
// common, long words rarer. Numbers count as rare.
func wordWeight(k string) float32 {
	n := utf8.RuneCountInString(k)
	switch {
	case n <= 2:
		return 0.6
	case n <= 4:
		return 0.85
	case n <= 7:
		return 1
	}
	return 1.15
}

// addGrams adds the character n-grams of word k with boundary marks, sharing weight w.
func (e *HashEmbedder) addGrams(v []float32, k string, w float32) {
	r := []rune("<" + k + ">")
	if len(r) <= charGram+1 {
		return // the word feature already covers short words
	}
	n := len(r) - charGram + 1
	gw := w / float32(math.Sqrt(float64(n)))
	for i := 0; i < n; i++ {
		e.add(v, "c", string(r[i:i+charGram]), "", gw)
	}
}

// add hashes the feature kind+a+b to a coordinate and a sign, and adds w there. The hash is
// unkeyed FNV-1a so that every replica and every restart maps a feature to the same
// coordinate: vectors are shared through Redis.
func (e *HashEmbedder) add(v []float32, kind, a, b string, w float32) {
	h := fnv64(fnv64(fnv64(fnvOffset, kind), a), "\x00"+b)
	sign := float32(1)
	if h>>63 == 1 {
		sign = -1
	}
	v[h%uint64(len(v))] += sign * w
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv64(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// normalize scales v to unit length; the zero vector stays zero.
func normalize(v []float32) {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 {
		return
	}
	inv := float32(1 / math.Sqrt(s))
	for i := range v {
		v[i] *= inv
	}
}

// Cosine returns the cosine similarity of a and b, or 0 when either is the zero vector or
// their lengths differ.
func Cosine(a, b []float32) float64 {
	if len(a) != len(b) {
		return 0
	}
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	if aa == 0 || bb == 0 {
		return 0
	}
	return ab / math.Sqrt(aa*bb)
}
