package semantic

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// token is one word of a text, as produced by [tokenize].
type token struct {
	// orig is the word as written (NFC), used by the guard to see capitals.
	orig string
	// key is the lower-cased word with Vietnamese tone marks moved to the end, so the two tone
	// placements in use ("hòa" and "hoà") give one key.
	key string
	// start reports whether the word opens a sentence.
	start bool
	// num reports whether the word is a run of digits (with inner '.', ',' or '/').
	num bool
}

// Vietnamese tone marks as combining characters (NFD). The vowel marks (circumflex, breve,
// horn) are not tone marks and stay in place.
var toneMarks = map[rune]bool{
	'\u0300': true, // huyền
	'\u0301': true, // sắc
	'\u0303': true, // ngã
	'\u0309': true, // hỏi
	'\u0323': true, // nặng
}

// contractions maps an English clitic to the words it stands for. The key includes the
// apostrophe, which [tokenize] has already normalised to U+0027.
var contractions = map[string]string{
	"n't": "not", "'re": "are", "'ve": "have", "'ll": "will", "'m": "am", "'d": "would",
}

// irregularNegations spells out contractions whose stem changes.
var irregularNegations = map[string][2]string{
	"can't": {"can", "not"}, "won't": {"will", "not"}, "shan't": {"shall", "not"},
	"ain't": {"is", "not"}, "cannot": {"can", "not"},
}

// tokenize splits text into words. Letters, digits and combining marks form words; an
// apostrophe inside a word splits English contractions ("don't" becomes "do" "not"); digits
// joined by '.', ',' or '/' stay one number ("3.5", "9/11"). Everything else separates words,
// and '.', '?', '!' and line breaks end a sentence.
func tokenize(text string) []token {
	text = norm.NFC.String(text)
	text = strings.NewReplacer("\u2019", "'", "\u2018", "'", "`", "'").Replace(text)
	var (
		toks  []token
		start = true
		i     = 0
	)
	for i < len(text) {
		r, size := utf8.DecodeRuneInString(text[i:])
		if !isWordRune(r) {
			if r == '.' || r == '?' || r == '!' || r == '\n' || r == ';' || r == ':' {
				start = true
			}
			i += size
			continue
		}
		j := wordEnd(text, i)
		j = symbolSuffix(text, j)
		toks = appendWord(toks, text[i:j], start)
		start = false
		i = j
	}
	return toks
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r)
}

// wordEnd returns the end of the word starting at i: word runes, plus an apostrophe or a
// number separator when a word rune follows.
func wordEnd(text string, i int) int {
	j := i
	for j < len(text) {
		r, size := utf8.DecodeRuneInString(text[j:])
		if isWordRune(r) {
			j += size
			continue
		}
		if j+size >= len(text) {
			break
		}
		next, _ := utf8.DecodeRuneInString(text[j+size:])
		prev, _ := utf8.DecodeLastRuneInString(text[i:j])
		switch {
		case r == '\'' && unicode.IsLetter(next):
		case (r == '.' || r == ',' || r == '/') && unicode.IsDigit(prev) && unicode.IsDigit(next):
		default:
			return j
		}
		j += size
	}
	return j
}

// appendWord appends w, splitting English contractions.
func appendWord(toks []token, w string, start bool) []token {
	lw := strings.ToLower(w)
	if parts, ok := irregularNegations[lw]; ok {
		toks = append(toks, token{orig: w[:len(parts[0])], key: parts[0], start: start})
		return append(toks, token{orig: "not", key: "not"})
	}
	if k := strings.IndexByte(lw, '\''); k > 0 {
		if strings.HasSuffix(lw, "n't") {
			k = len(lw) - 3
		}
		head, tail := w[:k], lw[k:]
		toks = appendWord(toks, head, start)
		if exp, ok := contractions[tail]; ok {
			return append(toks, token{orig: exp, key: exp})
		}
		// "'s" and unknown clitics carry no meaning we compare.
		return toks
	}
	return append(toks, token{orig: w, key: wordKey(lw), start: start, num: isNumber(w)})
}

// wordKey moves Vietnamese tone marks of a lower-case word to its end.
func wordKey(lw string) string {
	ascii := true
	for i := 0; i < len(lw); i++ {
		if lw[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return lw
	}
	d := norm.NFD.String(lw)
	var base, tones []rune
	for _, r := range d {
		if toneMarks[r] {
			tones = append(tones, r)
			continue
		}
		base = append(base, r)
	}
	if len(tones) == 0 {
		return norm.NFC.String(lw)
	}
	return norm.NFC.String(string(base)) + string(tones)
}

func isNumber(w string) bool {
	r, _ := utf8.DecodeRuneInString(w)
	if !unicode.IsDigit(r) {
		return false
	}
	for _, r := range w {
		if !unicode.IsDigit(r) && r != '.' && r != ',' && r != '/' {
			return false
		}
	}
	return true
}

// stem removes common English inflections from an ASCII word ("books" → "book",
// "learning" → "learn"). It is deliberately light: it never touches short words or
// non-ASCII words, so Vietnamese syllables pass unchanged.
func stem(w string) string {
	for i := 0; i < len(w); i++ {
		if w[i] >= utf8.RuneSelf || (w[i] >= '0' && w[i] <= '9') {
			return w
		}
	}
	n := len(w)
	switch {
	case n > 4 && strings.HasSuffix(w, "ies"):
		return w[:n-3] + "y"
	case n > 4 && strings.HasSuffix(w, "sses"):
		return w[:n-2]
	case n > 5 && strings.HasSuffix(w, "ing"):
		return undouble(w[:n-3])
	case n > 4 && strings.HasSuffix(w, "ed") && !strings.HasSuffix(w, "eed"):
		return undouble(w[:n-2])
	case n > 3 && strings.HasSuffix(w, "s") && !strings.HasSuffix(w, "ss") &&
		!strings.HasSuffix(w, "us") && !strings.HasSuffix(w, "is"):
		return w[:n-1]
	}
	return w
}

// undouble turns "runn" into "run" after a suffix was removed.
func undouble(w string) string {
	n := len(w)
	if n >= 3 && w[n-1] == w[n-2] && !strings.ContainsRune("lsz", rune(w[n-1])) {
		return w[:n-1]
	}
	return w
}

// symbolSuffix extends a word ending at j over a trailing "+", "++" or "#" that ends the
// word, so "C", "C++" and "C#" stay apart.
func symbolSuffix(text string, j int) int {
	k := j
	for k < len(text) && k-j < 2 && (text[k] == '+' || text[k] == '#') {
		k++
	}
	if k == j {
		return j
	}
	if k < len(text) {
		r, _ := utf8.DecodeRuneInString(text[k:])
		if isWordRune(r) {
			return j // "2+3": an operator, not part of the word
		}
	}
	return k
}
