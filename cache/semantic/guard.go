package semantic

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// GuardReason says why the guard rejected a pair. The empty reason means the pair passed.
type GuardReason string

// Guard reasons.
const (
	GuardNumbers  GuardReason = "numbers"
	GuardNegation GuardReason = "negation"
	GuardAntonym  GuardReason = "antonym"
	GuardEntity   GuardReason = "entity"
	GuardQuestion GuardReason = "question"
	// GuardPerson: the texts ask about different people ("my life" and "your life", "How
	// do you ..." and "How do I ...").
	GuardPerson GuardReason = "person"
	// GuardModal: the texts use different modal verbs or tenses ("Can I ..." and "Should I
	// ...", "What happened ..." and "What is happening ...").
	GuardModal GuardReason = "modal"
	// GuardDeictic: a text points at something outside itself ("this video", "these
	// signs"), which the two askers need not share.
	GuardDeictic GuardReason = "deictic"
	// GuardWording: a content word, quoted term or symbol of one text is missing from the
	// other, or a word changes form ("bored" and "boring"), or a text is too short to allow
	// any change beyond articles.
	GuardWording GuardReason = "wording"
	// GuardOrder: the texts share their content words in a different order ("A and not B"
	// and "B and not A").
	GuardOrder GuardReason = "order"
	// GuardPreposition: the texts relate their words with different prepositions ("work at
	// the UN" and "work for the UN").
	GuardPreposition GuardReason = "preposition"
)

// signature holds what the guard compares about one text.
type signature struct {
	numbers  []string // numbers in order of appearance, digits and number words
	ops      string   // arithmetic operators in order of appearance
	neg      int      // negation words
	poles    map[int]uint8
	question uint16          // bit set of question kinds, see questionKind
	entities []string        // keys of capitalised or mixed-case words
	words    map[string]bool // every word key, and its stem
	wording
}

// GuardMode selects the rules of the guard.
type GuardMode int

const (
	// GuardAuto picks GuardStrict for the built-in [HashEmbedder] and GuardBasic for any
	// other embedder.
	GuardAuto GuardMode = iota
	// GuardBasic rejects pairs that differ in a number, a negation, one side of a toggle,
	// the kind of question or a name (see [Guard]).
	GuardBasic
	// GuardStrict adds the wording rules of [StrictGuard]. It suits the built-in embedder,
	// whose similarity only counts shared words: with it, pairs of short questions pass only
	// when they differ in little more than articles, auxiliaries, word endings and
	// punctuation. A model embedder that reads meaning can match rewordings, which these
	// rules would reject.
	GuardStrict
)

// For resolves GuardAuto for embedder e.
func (m GuardMode) For(e Embedder) GuardMode {
	if m != GuardAuto {
		return m
	}
	if _, ok := e.(*HashEmbedder); ok {
		return GuardStrict
	}
	return GuardBasic
}

// Check applies the mode's rules to a pair; see [Guard] and [StrictGuard]. GuardAuto
// applies the strict rules, as it does with the built-in embedder.
func (m GuardMode) Check(stored, query string) GuardReason {
	return compareSignatures(newSignature(stored), newSignature(query), m != GuardBasic)
}

// Guard reports whether a stored text and a query text that embed closely may share an
// answer. It rejects pairs that differ in what usually changes the answer while changing few
// words: numbers ("2+3" and "2+4", "iPhone 14" and "iPhone 15", digits or number words in
// English and Vietnamese), negation ("not", "never", "n't", "không", "chưa", "đừng"), one side
// of a common toggle ("turn on" and "turn off", "bật" and "tắt"), the kind of question ("how"
// and "why") and named entities (a capitalised, all-caps or mixed-case word of one text that
// the other does not contain, such as "Atlanta" and "Toronto" or "Hà Nội" and "Đà Nẵng"). It
// returns the empty reason when the pair passes. Guard is symmetric and safe for concurrent
// use.
func Guard(stored, query string) GuardReason { return GuardBasic.Check(stored, query) }

// StrictGuard applies the rules of [Guard] and then the wording rules, which reject a pair
// of short questions (up to ten content words) that differ in:
//   - the people asked about: "you" and "I", "my" and "your" ([GuardPerson]);
//   - modal verbs or tense: "can" and "should", "was" and "is" ([GuardModal]);
//   - anything but articles, for a question of one content word ([GuardWording]);
//   - a content word beyond a plural "-s", a word's "-ing" or "-ed" form, a quoted term, a
//     symbol, the superlative "most", the word a negation applies to, or "do" as the main
//     verb ([GuardWording]);
//   - the order of their content words ([GuardOrder]);
//   - their prepositions: "work at" and "work for" ([GuardPreposition]).
//
// It also rejects every pair in which either text says "this" or "these" ([GuardDeictic]):
// such questions point at a picture, a link or a passage that two askers need not share.
// Longer texts may change order and prepositions. StrictGuard is symmetric and safe for
// concurrent use.
//
// TODO: the person, modal, preposition and deictic word lists are English; Vietnamese
// questions get only the language-neutral rules.
func StrictGuard(stored, query string) GuardReason { return GuardStrict.Check(stored, query) }

func compareSignatures(a, b *signature, strict bool) GuardReason {
	switch {
	case !slices.Equal(a.numbers, b.numbers) || a.ops != b.ops:
		return GuardNumbers
	case a.neg != b.neg:
		return GuardNegation
	case opposite(a.poles, b.poles):
		return GuardAntonym
	case a.question != b.question:
		return GuardQuestion
	case !covers(a.entities, b.words) || !covers(b.entities, a.words):
		return GuardEntity
	case strict:
		return compareWording(&a.wording, &b.wording, a.words, b.words)
	}
	return ""
}

// opposite reports whether the texts use different sides of some antonym pair. A pair used
// by one text only does not count: "how to be more creative" and "how to be creative" ask
// the same.
func opposite(a, b map[int]uint8) bool {
	for k, v := range a {
		if w := b[k]; w != 0 && w != v {
			return true
		}
	}
	return false
}

func covers(entities []string, words map[string]bool) bool {
	for _, e := range entities {
		if !words[e] && !words[stem(e)] {
			return false
		}
	}
	return true
}

func newSignature(text string) *signature {
	toks := tokenize(text)
	s := &signature{
		numbers: numbers(toks),
		ops:     operators(text),
		neg:     negationCount(toks),
		poles:   make(map[int]uint8),
		words:   make(map[string]bool, 2*len(toks)),
	}
	for _, t := range toks {
		s.words[t.key] = true
		s.words[stem(t.key)] = true
		if p, ok := antonymPairs[t.key]; ok {
			s.poles[p.pair] |= 1 << p.side
		} else if p, ok := antonymPairs[stem(t.key)]; ok {
			s.poles[p.pair] |= 1 << p.side
		}
	}
	s.entities = entities(toks)
	s.question = questionKinds(toks)
	s.wording = newWording(text, toks)
	return s
}

// numbers lists the numbers of a text in order: digit runs (thousands separators removed)
// and number words. A Vietnamese "năm" directly followed by digits means "year" and is
// skipped; a Vietnamese "không" counts only next to another Vietnamese number word.
func numbers(toks []token) []string {
	var out []string
	for i, t := range toks {
		if t.num {
			out = append(out, strings.ReplaceAll(t.key, ",", ""))
			continue
		}
		v, ok := numberWords[t.key]
		if !ok {
			continue
		}
		next := i+1 < len(toks) && !toks[i+1].start
		switch t.key {
		case wordKey("năm"):
			if next && toks[i+1].num {
				continue
			}
		case wordKey("không"):
			prev := i > 0 && !t.start && vietnameseNumberWords[toks[i-1].key]
			if !prev && !(next && vietnameseNumberWords[toks[i+1].key]) {
				continue
			}
		}
		out = append(out, v)
	}
	return out
}

// operators returns the arithmetic operators of a text in order. An operator counts only
// next to a digit ("2+3", "5 * 4", "50%"), so "C++" and a trailing "*" do not; '-' counts
// only after a digit, since it also starts negative numbers and joins words.
func operators(text string) string {
	var b strings.Builder
	var prev rune
	for i, r := range text {
		switch r {
		case '+', '*', '×', '÷', '^', '=', '<', '>', '%', '-':
			next := nextNonSpace(text[i+utf8.RuneLen(r):])
			if unicode.IsDigit(prev) || (r != '-' && unicode.IsDigit(next)) {
				b.WriteRune(r)
			}
		}
		if !unicode.IsSpace(r) {
			prev = r
		}
	}
	return b.String()
}

// negationCount counts negation words. Vietnamese "không" and "chưa" that end a sentence are
// question particles ("Bạn có khỏe không?", "Ăn cơm chưa?") and are not counted.
func negationCount(toks []token) int {
	n := 0
	for i, t := range toks {
		if !negations[t.key] {
			continue
		}
		last := i+1 == len(toks) || toks[i+1].start
		if last && (t.key == wordKey("không") || t.key == wordKey("chưa")) {
			continue
		}
		n++
	}
	return n
}

// entities returns the keys of words that look like names: capitalised words inside a
// sentence, all-caps words, mixed-case words ("iPhone") and words mixing letters and digits
// ("A320"). A word opening a sentence counts only when it is all caps or mixed case, since
// every sentence starts with a capital. In title-case text, where most words are
// capitalised, only all-caps and mixed-case words count.
func entities(toks []token) []string {
	caps := 0
	for _, t := range toks {
		if r, _ := utf8.DecodeRuneInString(t.orig); unicode.IsUpper(r) {
			caps++
		}
	}
	titleCase := len(toks) >= 4 && 2*caps > len(toks)
	var out []string
	for _, t := range toks {
		if t.num || t.key == "i" || numberWords[t.key] != "" {
			continue
		}
		shape := wordShape(t.orig)
		switch {
		case shape == shapeMixed || shape == shapeAlnum:
		case shape == shapeUpper && utf8.RuneCountInString(t.orig) >= 2:
		case shape == shapeCapitalised && !t.start && !titleCase && !stopWords[t.key]:
		default:
			continue
		}
		out = append(out, t.key)
	}
	return out
}

type shape int

const (
	shapeLower shape = iota
	shapeCapitalised
	shapeUpper
	shapeMixed
	shapeAlnum
)

// wordShape classifies the letter case of a word.
func wordShape(w string) shape {
	var upper, lower, digit int
	firstUpper := false
	for i, r := range w {
		switch {
		case unicode.IsUpper(r):
			upper++
			if i == 0 {
				firstUpper = true
			}
		case unicode.IsLower(r):
			lower++
		case unicode.IsDigit(r):
			digit++
		}
	}
	switch {
	case digit > 0 && upper+lower > 0:
		return shapeAlnum
	case upper == 0:
		return shapeLower
	case lower == 0:
		return shapeUpper
	case firstUpper && upper == 1:
		return shapeCapitalised
	}
	return shapeMixed
}

func nextNonSpace(s string) rune {
	for _, r := range s {
		if !unicode.IsSpace(r) {
			return r
		}
	}
	return 0
}

// Question kinds, as bits of signature.question.
const (
	qHow uint16 = 1 << iota
	qWhy
	qWhere
	qWhen
	qWho
	qWhat
	qQuantity
	qYesNo
)

// questionWordKinds maps question words to their kind. Vietnamese question words are
// listed by their last syllable after the first ("tại sao", "vì sao" → why) in
// [vietnameseQuestionPairs].
var questionWordKinds = keyKinds(map[string]uint16{
	"how": qHow, "why": qWhy, "where": qWhere, "when": qWhen, "who": qWho, "whom": qWho,
	"whose": qWho, "what": qWhat, "which": qWhat, "ai": qWho,
})

// vietnameseQuestionPairs maps two-syllable Vietnamese question words to their kind.
var vietnameseQuestionPairs = keyKinds(map[string]uint16{
	"tại sao": qWhy, "vì sao": qWhy, "thế nào": qHow, "như nào": qHow, "làm sao": qHow,
	"ở đâu": qWhere, "khi nào": qWhen, "bao giờ": qWhen, "bao nhiêu": qQuantity,
	"là gì": qWhat, "cái gì": qWhat,
})

// yesNoStarts open a yes-no question when they open a sentence.
var yesNoStarts = keySet(`is are was were am do does did can could should would will shall
may might must have has had`)

// quantityWords after "how" ask for a quantity rather than a manner.
var quantityWords = keySet(`many much long old far often big tall`)

func keyKinds(in map[string]uint16) map[string]uint16 {
	m := make(map[string]uint16, len(in))
	for k, v := range in {
		words := strings.Fields(k)
		for i := range words {
			words[i] = wordKey(words[i])
		}
		m[strings.Join(words, " ")] = v
	}
	return m
}

// questionKinds returns the kinds of question a text asks: the question words it uses
// ("how", "why", "tại sao"; "how many" asks a quantity) and, for a sentence opening with an
// auxiliary verb and holding no question word, yes-no. "Should I become a teacher?" and "Why
// should I become a teacher?" ask different things.
func questionKinds(toks []token) uint16 {
	var kinds, sentence uint16
	yesNo := false
	flush := func() {
		if sentence == 0 && yesNo {
			sentence = qYesNo
		}
		kinds |= sentence
		sentence, yesNo = 0, false
	}
	for i, t := range toks {
		if t.start {
			flush()
			yesNo = yesNoStarts[t.key]
		}
		if i > 0 && !t.start {
			if k, ok := vietnameseQuestionPairs[toks[i-1].key+" "+t.key]; ok {
				sentence |= k
				continue
			}
		}
		k, ok := questionWordKinds[t.key]
		if !ok {
			continue
		}
		if k == qHow && i+1 < len(toks) && quantityWords[toks[i+1].key] {
			k = qQuantity
		}
		sentence |= k
	}
	flush()
	return kinds
}
