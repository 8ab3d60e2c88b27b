package semantic

import "testing"

func TestGuard(t *testing.T) {
	tests := []struct {
		name          string
		stored, query string
		want          GuardReason
	}{
		{"places", "What are the most competitive jobs in Atlanta?",
			"What are the most competitive jobs in Toronto?", GuardEntity},
		{"same place other case", "best pho in Hanoi", "Best pho in hanoi?", ""},
		{"arithmetic", "what is 2+3", "what is 2+4", GuardNumbers},
		{"arithmetic operator", "what is 2+3", "what is 2*3", GuardNumbers},
		{"same arithmetic spaced", "what is 2+3?", "What is 2 + 3", ""},
		{"product version", "Is the iPhone 14 waterproof?", "Is the iPhone 15 waterproof?",
			GuardNumbers},
		{"number words", "I have two cats", "I have three cats", GuardNumbers},
		{"digits against words", "a list of 3 ideas", "a list of three ideas", ""},
		{"toggle", "turn on the light", "turn off the light", GuardAntonym},
		{"negation", "Why does my code work?", "Why doesn't my code work?", GuardNegation},
		{"negation spelled out", "Why can't I sleep?", "Why can I not sleep?", ""},
		{"more is not opposite", "How can I become creative?", "How can I become more creative?",
			""},
		{"question kind", "How do I renounce my citizenship?", "Can I renounce my citizenship?",
			GuardQuestion},
		{"how many", "How many people live in Paris?", "How do people live in Paris?",
			GuardQuestion},
		{"C and C#", "Is C better than Java?", "Is C# better than Java?", GuardEntity},
		{"vietnamese toggle", "bật đèn phòng khách", "tắt đèn phòng khách", GuardAntonym},
		{"vietnamese places", "Thời tiết ở Hà Nội hôm nay thế nào?",
			"Thời tiết ở Đà Nẵng hôm nay thế nào?", GuardEntity},
		{"vietnamese negation", "Tôi muốn đi học", "Tôi không muốn đi học", GuardNegation},
		{"vietnamese question particle", "Bạn có khỏe không?", "Bạn có khỏe không ?", ""},
		{"vietnamese question particle is not negation", "Bạn có khỏe không?",
			"bạn có khoẻ", ""},
		{"vietnamese do not", "đừng mở cửa", "mở cửa", GuardNegation},
		{"vietnamese numbers", "mua hai vé", "mua ba vé", GuardNumbers},
		{"vietnamese year is not five", "năm 2020", "năm 2020", ""},
		{"vietnamese tone placement", "Hoà Bình ở đâu", "Hòa Bình ở đâu", ""},
		{"paraphrase passes", "What is the best way to learn Python?",
			"What's the best way to learn python", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Guard(tt.stored, tt.query); got != tt.want {
				t.Errorf("Guard(%q, %q) = %q, want %q", tt.stored, tt.query, got, tt.want)
			}
			if got := Guard(tt.query, tt.stored); got != tt.want {
				t.Errorf("Guard(%q, %q) = %q, want %q (reversed)", tt.query, tt.stored, got,
					tt.want)
			}
		})
	}
}

func FuzzGuard(f *testing.F) {
	f.Add("what is 2+3", "what is 2+4")
	f.Add("Bạn có khỏe không?", "C++ vs C#")
	f.Add("don't", "'''n't")
	f.Fuzz(func(t *testing.T, a, b string) {
		Guard(a, b)
		e, _ := NewHashEmbedder(64)
		_ = e.EmbedText(a)
	})
}
