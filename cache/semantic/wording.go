package semantic

import (
	"slices"
	"strings"
	"unicode"
)

// wording is the part of a text's [signature] that the stricter guard rules compare: the
// rules that let a pair through only when the two texts differ in little more than
// articles, auxiliaries, word endings, punctuation and filler.
//
// These rules exist because the built-in embedder only sees shared words: a pair that shares
// most words scores high whether or not it asks the same thing. On the QQP developer pairs
// each rule below rejects pairs that are labelled different questions at a higher rate than
// it rejects pairs labelled duplicates (measured with cmd/semantic-eval on a fixed half).
type wording struct {
	content   []string // stems of content words, first occurrence order
	forms     []uint8  // forms[i]: bit set of the forms content[i] takes
	quoted    []string // stems of the words inside quotation marks
	symbols   string   // symbol characters in order
	plain     string   // sorted word keys without articles, for short texts
	person    uint8    // bit set of grammatical persons used
	modal     uint8    // bit set of modal classes used, and past auxiliaries
	preps     uint32   // bit set of prepositions used
	negScope  string   // the content word after each negation
	deictic   bool     // "this" or "these"
	most      bool     // the superlative "most"
	doFinal   bool     // "do" as a main verb at the end of a sentence
	shortText bool     // at most one content word
}

// Word forms, as bits of wording.forms.
const (
	formBase uint8 = 1 << iota
	formIng
	formEd
)

// personWords maps English pronouns and possessives to a grammatical person.
var personWords = map[string]uint8{
	"i": 1, "me": 1, "my": 1, "mine": 1, "myself": 1,
	"we": 2, "us": 2, "our": 2, "ours": 2, "ourselves": 2,
	"you": 4, "your": 4, "yours": 4, "yourself": 4, "yourselves": 4, "u": 4,
	"he": 8, "him": 8, "his": 8, "himself": 8, "she": 8, "her": 8, "hers": 8, "herself": 8,
	"they": 16, "them": 16, "their": 16, "theirs": 16, "themselves": 16,
}

// modalWords maps modal verbs to a class: ability or permission, obligation or advice, the
// future, the conditional. Past auxiliaries form one more class, so that "What was it like"
// and "What is it like" differ.
var modalWords = map[string]uint8{
	"can": 1, "could": 1, "may": 1, "might": 1,
	"should": 2, "must": 2, "ought": 2,
	"will": 4, "shall": 4, "would": 8,
	"was": 16, "were": 16, "did": 16, "had": 16,
}

// prepositions are compared as a set: "in", "of", "for" and the rest relate the content
// words, and a different one often asks something else.
var prepositions = func() map[string]uint32 {
	m := make(map[string]uint32)
	for i, w := range strings.Fields(`in of at for into to with on from by about onto over
		under between against through during toward towards`) {
		m[w] = 1 << i
	}
	return m
}()

// longText is the number of content words beyond which a text reads as a passage rather
// than a question: two passages may reorder their clauses and change prepositions and
// still say the same (on the vnPara pairs such changes are nearly always paraphrases),
// while two short questions that do so usually ask different things.
const longText = 10

// articles are the only words a short text may gain or lose.
var articles = keySet(`a an the`)

// symbolChars are the punctuation marks that carry meaning in a question about code or
// notation; every unicode symbol (math, currency, arrows) counts too.
const symbolChars = "#@<>=*+~|\\^_%$&[]{}"

func newWording(text string, toks []token) wording {
	w := wording{quoted: quotedWords(text), symbols: symbols(text)}
	plain := make([]string, 0, len(toks))
	for i, t := range toks {
		w.person |= personWords[t.key]
		w.modal |= modalWords[t.key]
		w.preps |= prepositions[t.key]
		if negations[t.key] {
			w.negScope += nextContent(toks[i+1:]) + " "
		}
		switch t.key {
		case "most":
			w.most = true
		case "this", "these":
			w.deictic = true
		case "do":
			last := i+1 == len(toks) || toks[i+1].start
			w.doFinal = w.doFinal || (last && i > 0)
		}
		if !articles[t.key] {
			plain = append(plain, t.key)
		}
		if !isContent(t) {
			continue
		}
		k := stem(t.key)
		j := slices.Index(w.content, k)
		if j < 0 {
			j = len(w.content)
			w.content = append(w.content, k)
			w.forms = append(w.forms, 0)
		}
		w.forms[j] |= wordForm(t.key, k)
	}
	w.shortText = len(w.content) <= 1
	if w.shortText {
		slices.Sort(plain)
		w.plain = strings.Join(plain, " ")
	}
	return w
}

// isContent reports whether a word carries the content of a question: not a stop word, a
// question word, a negation or a number, which other rules compare.
func isContent(t token) bool {
	return !t.num && !stopWords[t.key] && !questionWords[t.key] && !negations[t.key] &&
		numberWords[t.key] == ""
}

// nextContent returns the stem of the first content word of toks, or "".
func nextContent(toks []token) string {
	for _, t := range toks {
		if isContent(t) {
			return stem(t.key)
		}
	}
	return ""
}

// wordForm tells "-ing" and "-ed" forms from others, for a word k whose stem is s.
func wordForm(k, s string) uint8 {
	switch {
	case k == s:
		return formBase
	case strings.HasSuffix(k, "ing"):
		return formIng
	case strings.HasSuffix(k, "ed"):
		return formEd
	}
	return formBase
}

// quotedWords returns the stems of the words inside double quotation marks. Quoted words
// are what a question is about ("the meaning of "of" in this sentence"), so even stop words
// count.
func quotedWords(text string) []string {
	text = strings.NewReplacer("\u201c", `"`, "\u201d", `"`, `""`, `"`).Replace(text)
	parts := strings.Split(text, `"`)
	var out []string
	for i := 1; i < len(parts)-1; i += 2 {
		for _, t := range tokenize(parts[i]) {
			out = append(out, stem(t.key))
		}
	}
	return out
}

// symbols returns the symbol characters of a text in order.
func symbols(text string) string {
	var b strings.Builder
	for _, r := range text {
		if unicode.IsSymbol(r) || strings.ContainsRune(symbolChars, r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// compareWording applies the stricter rules; aw and bw are every word key of each text and
// its stem.
func compareWording(a, b *wording, aw, bw map[string]bool) GuardReason {
	long := len(a.content) > longText && len(b.content) > longText
	switch {
	case a.person != b.person:
		return GuardPerson
	case a.modal != b.modal:
		return GuardModal
	case a.deictic || b.deictic:
		return GuardDeictic
	case a.symbols != b.symbols || a.doFinal != b.doFinal || a.most != b.most ||
		a.negScope != b.negScope ||
		(a.shortText || b.shortText) && a.plain != b.plain ||
		!sameContent(a, b) || !coversAll(a.quoted, bw) || !coversAll(b.quoted, aw):
		return GuardWording
	case long:
		return ""
	case !slices.Equal(a.content, b.content):
		// Same words (sameContent passed), another order.
		return GuardOrder
	case a.preps != b.preps:
		return GuardPreposition
	}
	return ""
}

// sameContent reports whether both texts use the same content words, each in the same
// forms. Questions have a few content words, so a linear search is cheaper than a map.
func sameContent(a, b *wording) bool {
	if len(a.content) != len(b.content) {
		return false
	}
	for i, k := range a.content {
		j := slices.Index(b.content, k)
		if j < 0 || b.forms[j] != a.forms[i] {
			return false
		}
	}
	return true
}

func coversAll(words []string, in map[string]bool) bool {
	for _, w := range words {
		if !in[w] {
			return false
		}
	}
	return true
}
