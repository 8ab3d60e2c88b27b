package cache

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// NormalizeText returns the form of s that the exact cache hashes, so that texts a reader would
// call identical give one key:
//
//   - Unicode NFC, so precomposed and decomposed input (for example "ệ" typed as one code point
//     or as e + U+0323 + U+0302) are the same;
//   - Vietnamese tone marks in one placement (see [canonicalTone]), so "hòa" and "hoà" typed
//     by different keyboards are the same;
//   - every run of white space collapsed to one character: a newline when the run holds a line
//     break, otherwise a space; leading and trailing space removed. Keeping the line break
//     apart from the space keeps code and lists whose only difference is layout apart;
//   - when caseFold is set, every letter lower-cased with [unicode.ToLower].
func NormalizeText(s string, caseFold bool) string {
	s = norm.NFC.String(s)
	var b strings.Builder
	b.Grow(len(s))
	var word []rune
	pendingSpace, pendingNewline, started := false, false, false
	flushWord := func() {
		if len(word) == 0 {
			return
		}
		canonicalTone(word)
		for _, r := range word {
			if caseFold {
				r = unicode.ToLower(r)
			}
			b.WriteRune(r)
		}
		word = word[:0]
	}
	for _, r := range s {
		if unicode.IsSpace(r) {
			flushWord()
			pendingSpace = true
			pendingNewline = pendingNewline || r == '\n' || r == '\r' || r == '\u2028'
			continue
		}
		if pendingSpace && started {
			if pendingNewline {
				b.WriteByte('\n')
			} else {
				b.WriteByte(' ')
			}
		}
		pendingSpace, pendingNewline, started = false, false, true
		if unicode.IsLetter(r) || unicode.Is(unicode.Mn, r) {
			word = append(word, r)
			continue
		}
		flushWord()
		b.WriteRune(r)
	}
	flushWord()
	return b.String()
}

// Vietnamese tone marks. A syllable carries at most one of them, on one of its vowels.
const (
	toneGrave     = '\u0300' // huyền
	toneAcute     = '\u0301' // sắc
	toneTilde     = '\u0303' // ngã
	toneHook      = '\u0309' // hỏi
	toneDotBelow  = '\u0323' // nặng
	noTone        = 0
	maxTonedRunes = 0x1EFF
)

// toned describes a precomposed Latin letter as its letter without a tone mark and the mark.
type toned struct {
	base rune
	tone rune
}

var (
	// untone maps each precomposed letter that carries a Vietnamese tone mark to its parts.
	untone = map[rune]toned{}
	// retone maps parts back to the precomposed letter.
	retone = map[toned]rune{}
)

func init() {
	for r := rune(0xC0); r <= maxTonedRunes; r++ {
		d := norm.NFD.String(string(r))
		var tone rune
		var rest []rune
		for _, c := range d {
			switch c {
			case toneGrave, toneAcute, toneTilde, toneHook, toneDotBelow:
				if tone != noTone {
					rest = nil // two tone marks: not a Vietnamese letter
				}
				tone = c
			default:
				rest = append(rest, c)
			}
		}
		if tone == noTone || len(rest) == 0 {
			continue
		}
		base := []rune(norm.NFC.String(string(rest)))
		if len(base) != 1 {
			continue
		}
		untone[r] = toned{base: base[0], tone: tone}
		retone[toned{base: base[0], tone: tone}] = r
	}
}

// canonicalTone rewrites one NFC word in place so that its tone mark sits where the "new"
// convention puts it.
//
// Vietnamese has two conventions for the tone mark of a syllable whose vowels end in oa, oe or
// uy with no final consonant: the older one marks the first vowel (hòa, khỏe, thúy), the newer
// one, used by the 1980s orthography rules and many keyboards' "new style" setting, marks the
// second (hoà, khoẻ, thuý). Everywhere else the two agree: with a final consonant both mark
// the second vowel (hoàng, quyết), and in "qu" + vowel the u belongs to the consonant (quý,
// quỳ). So only a word whose vowel run is exactly o+a, o+e or u+y (without other diacritics),
// at the end of the word and not after "q", changes: a mark on its first vowel moves to the
// second. The choice of the new convention is arbitrary; it only has to be one of them.
func canonicalTone(w []rune) {
	n := len(w)
	if n < 2 {
		return
	}
	first, second := w[n-2], w[n-1]
	ft, ok := untone[first]
	if !ok {
		return // no mark on the first vowel: already canonical, or not a candidate
	}
	if !isToneMovePair(unicode.ToLower(ft.base), unicode.ToLower(second)) {
		return
	}
	if n >= 3 && !isVowel(w[n-3]) {
		if unicode.ToLower(w[n-3]) == 'q' && unicode.ToLower(ft.base) == 'u' {
			return // "qu" + y: the mark already sits on the only vowel
		}
	} else if n >= 3 {
		return // a third vowel before the pair (for example "uoa"): not the pattern
	}
	moved, ok := retone[toned{base: second, tone: ft.tone}]
	if !ok {
		return
	}
	w[n-2], w[n-1] = ft.base, moved
}

func isToneMovePair(a, b rune) bool {
	return (a == 'o' && (b == 'a' || b == 'e')) || (a == 'u' && b == 'y')
}

// isVowel reports whether r is a Vietnamese vowel letter, with or without marks.
func isVowel(r rune) bool {
	if t, ok := untone[r]; ok {
		r = t.base
	}
	switch unicode.ToLower(r) {
	case 'a', 'ă', 'â', 'e', 'ê', 'i', 'o', 'ô', 'ơ', 'u', 'ư', 'y':
		return true
	}
	return false
}
