package semantic

import "strings"

// Word lists used by the built-in embedder and the guard. Words are compared by their
// [token] key: lower case, Vietnamese tones moved to the end (see [wordKey]); the lists are
// written normally and converted by [keySet].

// stopWords are function words that say little about what is asked. The embedder gives them a
// small weight instead of dropping them, so "how" and "why" questions still differ a little.
var stopWords = keySet(`
a an the is are was were be been being am do does did doing have has had having
i me my mine myself you your yours we us our they them their he him his she her it its
this that these those there here of in at to for with by from about as into onto over
and or but if so than too very just also then than such
can could should would will shall may might must
some any all each every much many more most own same other another
what which who whom whose how why when where
get got gets getting make made one ones thing things way ways
là của và có những các được cho với thì này đó khi trong để đã sẽ đang bị vì nên thế như
mà ở tại cũng rất lại từ theo về nào gì sao hay hoặc còn nhưng nếu đến tới chỉ vẫn đều
ai đâu bao thật rằng việc sự cái con chiếc
`)

// questionWords keep more weight than other stop words: "how" and "why" ask different things.
var questionWords = keySet(`what which who whom whose how why when where gì nào sao ai đâu`)

// negations mark a negated statement. "không" and "chưa" at the end of a Vietnamese sentence
// are question particles ("có ... không?") and are not counted; see [negationCount].
var negations = keySet(`not no never nor neither none nobody nothing nowhere without
không chưa đừng chẳng chả chớ`)

// numberWords maps spelled numbers to their value. "one" and "một" are left out: both are
// mostly an article or a pronoun ("which one", "một người"). "năm" is both "five" and "year";
// it counts as a number only when no digits follow it (see [numbers]).
var numberWords = keyMap(map[string]string{
	"zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
	"seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
	"thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
	"eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
	"fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
	"hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9",
	"trillion": "1e12", "half": "0.5", "double": "x2", "twice": "x2", "triple": "x3",
	"first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
	"không": "0", "hai": "2", "ba": "3", "bốn": "4", "tư": "4", "năm": "5", "sáu": "6",
	"bảy": "7", "bẩy": "7", "tám": "8", "chín": "9", "mười": "10", "mươi": "10",
	"trăm": "100", "nghìn": "1000", "ngàn": "1000", "triệu": "1e6", "tỷ": "1e9", "tỉ": "1e9",
})

// vietnameseNumberWords lists the Vietnamese entries of [numberWords]; "không" is a number only
// next to another number word ("một trăm không năm").
var vietnameseNumberWords = keySet(`hai ba bốn tư năm sáu bảy bẩy tám chín mười mươi trăm
nghìn ngàn triệu tỷ tỉ`)

// antonymPairs are toggles whose two sides ask opposite things. Each line is one pair; a
// side may list several words.
var antonymPairs = keyPairs(`
on|off
enable enabled|disable disabled
open|close closed
start|stop
increase|decrease reduce
buy|sell
before|after
maximum max|minimum min
true|false
best|worst
more|less fewer
win|lose
add|remove delete
import|export
upload|download
encrypt|decrypt
male men man|female women woman
positive|positively negative
cheap cheapest|expensive
hot|cold
high highest|low lowest
first|last
push|pull
rich|poor
good|bad
love|hate
pros|cons
advantage|disadvantage
legal|illegal
bật|tắt
mở|đóng
tăng|giảm
mua|bán
trước|sau
lên|xuống
nóng|lạnh
cao|thấp
thắng|thua
nhiều|ít
lớn|nhỏ
đúng|sai
`)

func keySet(words string) map[string]bool {
	m := make(map[string]bool)
	for _, w := range strings.Fields(words) {
		m[wordKey(strings.ToLower(w))] = true
	}
	return m
}

func keyMap(in map[string]string) map[string]string {
	m := make(map[string]string, len(in))
	for k, v := range in {
		m[wordKey(k)] = v
	}
	return m
}

// antonymSide names one side of a pair: the pair's index and 0 or 1.
type antonymSide struct {
	pair, side int
}

func keyPairs(lines string) map[string]antonymSide {
	m := make(map[string]antonymSide)
	n := 0
	for _, line := range strings.Split(lines, "\n") {
		left, right, ok := strings.Cut(strings.TrimSpace(line), "|")
		if !ok {
			continue
		}
		for side, words := range []string{left, right} {
			for _, w := range strings.Fields(words) {
				m[wordKey(w)] = antonymSide{pair: n, side: side}
			}
		}
		n++
	}
	return m
}
