package routing

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func user(text string) []Message { return []Message{{Role: "user", Text: text}} }

const (
	mathWordProblem = "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes " +
		"muffins with four. She sells the remainder at the market for $2 per egg. How much " +
		"in dollars does she make every day?"
	codeQuestion = "Why does this Go function deadlock?\n```go\nfunc main() {\n\tch := " +
		"make(chan int)\n\tch <- 1\n\tfmt.Println(<-ch)\n}\n```"
	vnGreeting  = "Xin chào, bạn khỏe không?"
	vnReasoning = "Tại sao bầu trời có màu xanh? Hãy giải thích từng bước."
)

func TestAssessOrdersQuestions(t *testing.T) {
	tests := []struct {
		name         string
		lower, upper []Message
	}{
		{"greeting below math word problem", user("hi there!"), user(mathWordProblem)},
		{"greeting below code", user("hello"), user(codeQuestion)},
		{"Vietnamese greeting below Vietnamese reasoning", user(vnGreeting), user(vnReasoning)},
		{"plain fact below comparison", user("What is the capital of France?"),
			user("Compare the economic policies of France and Germany and explain why they " +
				"differ.")},
		{"short chat below deep conversation", user("ok thanks"), []Message{
			{Role: "system", Text: strings.Repeat("Follow the policy carefully. ", 60)},
			{Role: "user", Text: "a"}, {Role: "assistant", Text: "b"},
			{Role: "user", Text: "c"}, {Role: "assistant", Text: "d"},
			{Role: "user", Text: "ok thanks"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi := Assess(tt.lower), Assess(tt.upper)
			if lo.Score >= hi.Score {
				t.Errorf("Assess scores %.3f (%+v) >= %.3f (%+v)", lo.Score, lo, hi.Score, hi)
			}
		})
	}
}

func TestAssessLevels(t *testing.T) {
	tests := []struct {
		name     string
		msgs     []Message
		min, max float64
	}{
		{"simple greeting", user("hi"), 0, 0.15},
		{"Vietnamese greeting", user(vnGreeting), 0, 0.25},
		{"code", user(codeQuestion), 0.75, 1},
		{"math word problem", user(mathWordProblem), 0.6, 1},
		{"Vietnamese reasoning", user(vnReasoning), 0.5, 1},
		{"no messages", nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Assess(tt.msgs)
			if got.Score < tt.min || got.Score > tt.max {
				t.Errorf("Assess().Score = %.3f, want in [%g, %g]; signals %+v",
					got.Score, tt.min, tt.max, got)
			}
		})
	}
}

func TestAssessSignals(t *testing.T) {
	tests := []struct {
		name string
		msgs []Message
		want Complexity
	}{
		{
			name: "vietnamese reasoning cues",
			msgs: user(vnReasoning),
			want: Complexity{Words: 12, Turns: 1, Reasoning: 3, Vietnamese: true},
		},
		{
			name: "math operators and quantity",
			msgs: user("If 3x + 5 = 20, how many apples?"),
			want: Complexity{Words: 7, Turns: 1, Math: 5},
		},
		{
			name: "fence and code words",
			msgs: user("```python\ndef f(): return 1\n```"),
			want: Complexity{Words: 5, Turns: 1, Code: 9},
		},
		{
			name: "system words and turns",
			msgs: []Message{
				{Role: "system", Text: "be brief"}, {Role: "user", Text: "a"},
				{Role: "assistant", Text: "b"}, {Role: "user", Text: "step by step"},
			},
			want: Complexity{Words: 3, Turns: 2, SystemWords: 2, Reasoning: 1},
		},
		{
			name: "French accents are not Vietnamese",
			msgs: user("Pourquoi le café est-il très amer à Paris?"),
			want: Complexity{Words: 9, Turns: 1},
		},
	}
	ignoreScore := cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Score" },
		cmp.Ignore())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Assess(tt.msgs)
			if diff := cmp.Diff(tt.want, got, ignoreScore); diff != "" {
				t.Errorf("Assess() (-want +got):\n%s", diff)
			}
			if got.Score < 0 || got.Score > 1 {
				t.Errorf("Assess().Score = %g, want in [0, 1]", got.Score)
			}
		})
	}
}

func TestAssessDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	msgs := user(codeQuestion + " " + vnReasoning + " " + mathWordProblem)
	if n := testing.AllocsPerRun(100, func() { Assess(msgs) }); n != 0 {
		t.Errorf("Assess allocates %v times per call, want 0", n)
	}
}

func FuzzAssess(f *testing.F) {
	for _, s := range []string{"hi", codeQuestion, vnReasoning, mathWordProblem, "\xff\xfe`"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := Assess(user(s))
		if c.Score < 0 || c.Score > 1 {
			t.Errorf("Assess(%q).Score = %g, want in [0, 1]", s, c.Score)
		}
	})
}

func BenchmarkComplexity(b *testing.B) {
	msgs := []Message{
		{Role: "system", Text: "You are a helpful assistant."},
		{Role: "user", Text: mathWordProblem + " " + vnReasoning},
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msgs[0].Text) + len(msgs[1].Text)))
	for b.Loop() {
		Assess(msgs)
	}
}
