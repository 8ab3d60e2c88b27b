package routing

import (
	"log/slog"
	"math"
	"unicode"
	"unicode/utf8"
)

// Message is one chat message as the router sees it: its role ("system", "developer", "user"
// or "assistant") and its text. The router reads the text to measure complexity and never
// keeps, logs or returns it.
type Message struct {
	// Role is the author of the message.
	Role string
	// Text is the message's text content, with any non-text parts left out.
	Text string
}

// Complexity is how hard a question looks, measured from cheap signals of its text. Every
// field but Score is a raw count kept to explain the score; none holds message text.
type Complexity struct {
	// Score is the combined complexity from 0 (trivial) to 1 (hard).
	Score float64
	// Words is the number of words (≈ tokens) in the question: the last user message.
	Words int
	// Turns is the number of user messages in the conversation.
	Turns int
	// SystemWords is the number of words in system and developer messages.
	SystemWords int
	// Code counts code markers in the question: fences, code words, braces and semicolons.
	Code int
	// Math counts math markers: numbers, operators, math words and quantity questions
	// ("how many", "bao nhiêu").
	Math int
	// Reasoning counts reasoning cues ("why", "prove", "step by step", "tại sao", ...).
	Reasoning int
	// Vietnamese reports that the question is written in Vietnamese, detected by its
	// diacritics.
	Vietnamese bool
}

// LogValue writes the counts and the score, never any text.
func (c Complexity) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Float64("score", round3(c.Score)),
		slog.Int("words", c.Words),
		slog.Int("turns", c.Turns),
		slog.Int("system_words", c.SystemWords),
		slog.Int("code", c.Code),
		slog.Int("math", c.Math),
		slog.Int("reasoning", c.Reasoning),
		slog.Bool("vietnamese", c.Vietnamese),
	)
}

// Each signal becomes a feature from 0 to 1, and the features combine as a noisy OR:
//
//	score = 1 − Π (1 − weight_i × feature_i)
//
// so one strong signal (a code fence) is enough to make a question complex, several weak ones
// add up, and the score never leaves [0, 1]. The weights say how much a fully present signal
// alone raises the score; they were set by hand and checked against the routing evaluation
// data (cmd/routing-eval).
const (
	weightCode       = 0.75
	weightMath       = 0.7
	weightReasoning  = 0.6
	weightLength     = 0.35
	weightTurns      = 0.3
	weightSystem     = 0.2
	weightVietnamese = 0.05 // a small bump: weaker models tend to do worse in Vietnamese

	// lengthSaturation is the question length, in words, whose length feature is 1. The
	// feature grows with the logarithm of the length, so the first few dozen words count most.
	lengthSaturation = 300
	// systemSaturation is the system prompt length, in words, whose feature is 1.
	systemSaturation = 400
	// turnsSaturation is the number of earlier user turns whose feature is 1.
	turnsSaturation = 5
)

// Assess measures the complexity of the conversation's last user message, with the
// conversation's depth and system prompt as context. It reads each byte once and does not
// allocate. A conversation without a user message scores on its system prompt alone.
func Assess(msgs []Message) Complexity {
	var c Complexity
	last := -1
	for i, m := range msgs {
		switch m.Role {
		case "user":
			c.Turns++
			last = i
		case "system", "developer":
			c.SystemWords += countWords(m.Text)
		}
	}
	var s textSignals
	if last >= 0 {
		s.scan(msgs[last].Text)
	}
	c.Words = s.words
	c.Code = s.code()
	c.Math = s.math()
	c.Reasoning = s.reasoning
	c.Vietnamese = s.vietnamese()
	c.Score = c.combine(s.fence)
	return c
}

// combine turns the counts into the score.
func (c Complexity) combine(fence bool) float64 {
	code := saturate(float64(c.Code), 3)
	if fence {
		code = 1
	}
	length := math.Log2(1+float64(c.Words)) / math.Log2(1+lengthSaturation)
	turns := 0.0
	if c.Turns > 1 {
		turns = saturate(float64(c.Turns-1), turnsSaturation)
	}
	keep := (1 - weightCode*code) *
		(1 - weightMath*saturate(float64(c.Math), 4)) *
		(1 - weightReasoning*saturate(float64(c.Reasoning), 2)) *
		(1 - weightLength*min(1, length)) *
		(1 - weightTurns*turns) *
		(1 - weightSystem*saturate(float64(c.SystemWords), systemSaturation))
	if c.Vietnamese {
		keep *= 1 - weightVietnamese
	}
	return 1 - keep
}

func saturate(x, full float64) float64 { return min(1, x/full) }

// countWords counts runs of letters and digits.
func countWords(text string) int {
	n, in := 0, false
	for _, r := range text {
		w := isWordRune(r)
		if w && !in {
			n++
		}
		in = w
	}
	return n
}

func isWordRune(r rune) bool {
	if r < utf8.RuneSelf {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_'
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r)
}

// maxWordBytes bounds the words looked up as keywords; longer words are only counted.
const maxWordBytes = 32

// textSignals accumulates the counts of one text in a single pass.
type textSignals struct {
	words, numbers, operators, money int
	codeWords, codePunct, fences     int
	mathWords, quantity, reasoning   int
	vnWords, vnDistinct              int
	fence                            bool

	// The word being read and the one before it, lower-cased, for keyword and two-word cue
	// lookups.
	cur, prev       [maxWordBytes]byte
	curLen, prevLen int
	curLong         bool
	curDigit        bool // the word starts with a digit: a number
	curVN           bool // the word carries a Vietnamese diacritic
	backticks       int  // backticks in a row, for fences
}

func (s *textSignals) scan(text string) {
	for _, r := range text {
		if isWordRune(r) {
			s.addRune(r)
			continue
		}
		s.endWord()
		s.punct(r)
	}
	s.endWord()
}

func (s *textSignals) addRune(r rune) {
	if s.curLen == 0 && !s.curLong {
		s.curDigit = '0' <= r && r <= '9'
	}
	if r >= utf8.RuneSelf {
		r = unicode.ToLower(r)
		switch vietnameseMark(r) {
		case vnDistinct:
			s.vnDistinct++
			s.curVN = true
		case vnShared:
			s.curVN = true
		}
	} else if 'A' <= r && r <= 'Z' {
		r += 'a' - 'A'
	}
	if s.curLen+utf8.RuneLen(r) > maxWordBytes {
		s.curLong = true
		return
	}
	s.curLen += utf8.EncodeRune(s.cur[s.curLen:], r)
}

// endWord counts the word just read and looks it up.
func (s *textSignals) endWord() {
	if s.curLen == 0 && !s.curLong {
		return
	}
	s.words++
	if s.curVN {
		s.vnWords++
	}
	switch {
	case s.curDigit:
		s.numbers++
		s.prevLen = 0
	case s.curLong:
		s.prevLen = 0
	default:
		s.lookup()
		s.prev, s.prevLen = s.cur, s.curLen
	}
	s.curLen, s.curLong, s.curDigit, s.curVN = 0, false, false, false
}

func (s *textSignals) lookup() {
	s.count(keywords[string(s.cur[:s.curLen])])
	if s.prevLen == 0 {
		return
	}
	var pair [2*maxWordBytes + 1]byte
	n := copy(pair[:], s.prev[:s.prevLen])
	pair[n] = ' '
	n++
	n += copy(pair[n:], s.cur[:s.curLen])
	s.count(phrases[string(pair[:n])])
}

func (s *textSignals) count(k cue) {
	switch k {
	case cueCode:
		s.codeWords++
	case cueMath:
		s.mathWords++
	case cueQuantity:
		s.quantity++
	case cueReasoning:
		s.reasoning++
	}
}

func (s *textSignals) punct(r rune) {
	if r == '`' {
		s.backticks++
		if s.backticks == 3 {
			s.fences++
			s.fence = true
		}
		return
	}
	s.backticks = 0
	switch r {
	case '{', '}', ';':
		s.codePunct++
	case '+', '=', '*', '/', '^', '<', '>', '×', '÷', '−', '√', '∫', '∑', '≤', '≥', '≠':
		s.operators++
	case '$', '%', '€', '£', '₫':
		s.money++
	}
	if !unicode.IsSpace(r) {
		// Punctuation other than spaces breaks a two-word cue ("why. so" is not "why so").
		s.prevLen = 0
	}
}

func (s *textSignals) code() int {
	return 3*s.fences + s.codeWords + s.codePunct/3
}

// math counts numbers at half weight, since most questions mention a number or two, and a
// quantity question ("how many") at double weight, since with numbers it marks a word problem.
func (s *textSignals) math() int {
	n := s.operators + s.mathWords + s.money + s.numbers/2
	if s.quantity > 0 {
		n += 2 * s.quantity
	}
	return n
}

// vietnamese needs a letter found only in Vietnamese (ă, đ, ơ, ư or a vowel with a tone mark
// from the Latin Extended Additional block) and diacritics on at least a fifth of the words;
// French or Spanish text shares only some of the marks.
func (s *textSignals) vietnamese() bool {
	return s.vnDistinct > 0 && s.vnWords >= 2 && 5*s.vnWords >= s.words
}

type vnMark int

const (
	vnNone vnMark = iota
	vnShared
	vnDistinct
)

// vietnameseMark classifies a lower-case letter.
func vietnameseMark(r rune) vnMark {
	if r >= 0x1EA0 && r <= 0x1EF9 {
		return vnDistinct
	}
	switch r {
	case 'ă', 'đ', 'ơ', 'ư', 'ĩ', 'ũ',
		0x0309, 0x031B, 0x0323: // decomposed (NFD) hook above, horn and dot below
		return vnDistinct
	case 'à', 'á', 'ã', 'â', 'è', 'é', 'ê', 'ì', 'í', 'ò', 'ó', 'õ', 'ô', 'ù', 'ú', 'ý',
		0x0300, 0x0301, 0x0302, 0x0303, 0x0306: // decomposed grave, acute, circumflex, ...
		return vnShared
	}
	return vnNone
}

type cue uint8

const (
	cueNone cue = iota
	cueCode
	cueMath
	cueQuantity
	cueReasoning
)

// keywords are single-word cues, lower case.
var keywords = map[string]cue{
	// Code.
	"code": cueCode, "function": cueCode, "func": cueCode, "def": cueCode, "class": cueCode,
	"return": cueCode, "import": cueCode, "python": cueCode, "javascript": cueCode,
	"typescript": cueCode, "java": cueCode, "golang": cueCode, "rust": cueCode, "sql": cueCode,
	"select": cueCode, "regex": cueCode, "compile": cueCode, "compiler": cueCode,
	"bug": cueCode, "debug": cueCode, "implement": cueCode, "algorithm": cueCode,
	"program": cueCode, "programming": cueCode, "script": cueCode, "api": cueCode,
	"json": cueCode, "html": cueCode, "css": cueCode, "array": cueCode, "recursion": cueCode,
	"recursive": cueCode, "struct": cueCode, "pointer": cueCode, "bash": cueCode,
	"query": cueCode, "kotlin": cueCode, "cpp": cueCode, "hàm": cueCode,
	// Math.
	"solve": cueMath, "equation": cueMath, "equations": cueMath, "integral": cueMath,
	"derivative": cueMath, "probability": cueMath, "calculate": cueMath, "compute": cueMath,
	"sum": cueMath, "percent": cueMath, "percentage": cueMath, "average": cueMath,
	"ratio": cueMath, "fraction": cueMath, "prime": cueMath, "sqrt": cueMath, "area": cueMath,
	"volume": cueMath, "perimeter": cueMath, "matrix": cueMath, "polynomial": cueMath,
	"triangle": cueMath, "radius": cueMath, "dollars": cueMath, "cents": cueMath,
	"total": cueMath, "remainder": cueMath, "twice": cueMath, "half": cueMath,
	"tính": cueMath, "tổng": cueMath,
	// Reasoning.
	"why": cueReasoning, "prove": cueReasoning, "proof": cueReasoning, "explain": cueReasoning,
	"compare": cueReasoning, "contrast": cueReasoning, "analyze": cueReasoning,
	"analyse": cueReasoning, "evaluate": cueReasoning, "justify": cueReasoning,
	"derive": cueReasoning, "reasoning": cueReasoning, "implications": cueReasoning,
	"tradeoffs": cueReasoning, "deduce": cueReasoning, "infer": cueReasoning,
}

// phrases are two-word cues, lower case, one space apart.
var phrases = map[string]cue{
	"how many": cueQuantity, "how much": cueQuantity, "how long": cueQuantity,
	"how far": cueQuantity, "bao nhiêu": cueQuantity,
	"step by": cueReasoning, "think through": cueReasoning, "pros and": cueReasoning,
	"tại sao": cueReasoning, "vì sao": cueReasoning, "giải thích": cueReasoning,
	"chứng minh": cueReasoning, "so sánh": cueReasoning, "từng bước": cueReasoning,
	"phân tích": cueReasoning, "đánh giá": cueReasoning, "suy luận": cueReasoning,
	"lập trình": cueCode, "mã nguồn": cueCode, "thuật toán": cueCode,
	"phương trình": cueMath, "xác suất": cueMath, "diện tích": cueMath,
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
