package ledger

import (
	"strings"
	"sync"

	"github.com/tiktoken-go/tokenizer"
)

// Estimator counts tokens with OpenAI's byte-pair encodings (o200k_base for current models,
// cl100k_base for older ones). The vocabularies are compiled into the binary, so nothing is
// downloaded at run time. Counts for other vendors' models are estimates. The zero value is
// ready; it is safe for concurrent use.
type Estimator struct {
	once   [2]sync.Once
	codecs [2]tokenizer.Codec
}

// Encodings an [Estimator] picks from.
const (
	encO200k = iota
	encCl100k
)

// cl100kPrefixes are model-name prefixes that use cl100k_base; everything else uses
// o200k_base, the encoding of current OpenAI models.
var cl100kPrefixes = []string{"gpt-4", "gpt-3.5", "gpt-35", "text-embedding-"}

// Count returns the number of tokens in text as model would count them. Text that is not
// valid UTF-8 is counted at one token per 4 bytes, never failing.
func (e *Estimator) Count(model, text string) int64 {
	if text == "" {
		return 0
	}
	c := e.codec(model)
	if c == nil {
		return roughTokens(text)
	}
	n, err := c.Count(text)
	if err != nil {
		return roughTokens(text)
	}
	return int64(n)
}

// Usage estimates the usage of a request whose provider reported none, from its prompt and
// completion text. Per-message framing tokens are not counted.
func (e *Estimator) Usage(model, prompt, completion string) Usage {
	return Usage{PromptTokens: e.Count(model, prompt), CompletionTokens: e.Count(model, completion)}
}

func (e *Estimator) codec(model string) tokenizer.Codec {
	enc := encO200k
	m := strings.ToLower(model)
	if !strings.HasPrefix(m, "gpt-4o") && !strings.HasPrefix(m, "gpt-4.") {
		for _, p := range cl100kPrefixes {
			if strings.HasPrefix(m, p) {
				enc = encCl100k
				break
			}
		}
	}
	e.once[enc].Do(func() {
		name := tokenizer.O200kBase
		if enc == encCl100k {
			name = tokenizer.Cl100kBase
		}
		c, err := tokenizer.Get(name)
		if err == nil {
			e.codecs[enc] = c
		}
	})
	return e.codecs[enc]
}

// roughTokens is the usual four-bytes-per-token rule, used when the text cannot be encoded.
func roughTokens(text string) int64 { return int64(len(text)+3) / 4 }
