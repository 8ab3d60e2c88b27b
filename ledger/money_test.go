package ledger

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/phochat/phogate/internal/config"
)

func ptr[T any](v T) *T { return &v }

func TestCost(t *testing.T) {
	mini := PriceFromConfig(config.Price{Input: 0.15, Output: 0.60, CachedInput: ptr(0.075)})
	gpt4o := PriceFromConfig(config.Price{Input: 2.50, Output: 10.00, CachedInput: ptr(1.25)})
	embed := PriceFromConfig(config.Price{Input: 0.02})
	tests := []struct {
		name  string
		price Price
		usage Usage
		want  USD
	}{
		{"zero", mini, Usage{}, 0},
		{"one input token of gpt-4o-mini", mini, Usage{PromptTokens: 1}, 150},
		{"one cached token of gpt-4o-mini", mini, Usage{PromptTokens: 1, CachedPromptTokens: 1}, 75},
		// 1000 prompt (400 cached) and 500 completion tokens of gpt-4o:
		// 600*2.50 + 400*1.25 + 500*10.00 = 7000 USD per million = $0.007.
		{"gpt-4o mixed", gpt4o, Usage{PromptTokens: 1000, CompletionTokens: 500,
			CachedPromptTokens: 400}, 7_000_000},
		{"a million output tokens of gpt-4o", gpt4o, Usage{CompletionTokens: 1_000_000},
			10 * NanoPerUSD},
		{"embedding ignores output price", embed, Usage{PromptTokens: 3}, 60},
		{"cached capped at prompt", mini, Usage{PromptTokens: 2, CachedPromptTokens: 9}, 150},
		{"negative counts are zero", mini, Usage{PromptTokens: -5, CompletionTokens: -1}, 0},
		// 1 token at $0.0000015/M is 0.0015 nano-USD: rounds to 0; 400 tokens round to 1.
		{"sub-nano rounds half up", Price{Input: 1}, Usage{PromptTokens: 500_000}, 1},
		{"sub-nano rounds down", Price{Input: 1}, Usage{PromptTokens: 499_999}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Cost(tt.price, tt.usage); got != tt.want {
				t.Errorf("Cost(%+v, %+v) = %v, want %v", tt.price, tt.usage, got, tt.want)
			}
		})
	}
}

func TestCostSumsExactly(t *testing.T) {
	mini := PriceFromConfig(config.Price{Input: 0.15, Output: 0.60, CachedInput: ptr(0.075)})
	var sum USD
	for range 1_000_000 {
		sum += Cost(mini, Usage{PromptTokens: 7, CompletionTokens: 3})
	}
	// Each request costs 7*150 + 3*600 = 2850 nano-USD exactly.
	if sum != 2850*1_000_000 {
		t.Errorf("sum of a million costs = %v, want $2.850000000", sum)
	}
}

func TestPriceFromConfig(t *testing.T) {
	got := PriceFromConfig(config.Price{Input: 0.15, Output: 0.6})
	want := Price{Input: 150_000_000, Output: 600_000_000, CachedInput: 150_000_000}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("PriceFromConfig (-want +got):\n%s", diff)
	}
}

func TestVND(t *testing.T) {
	tests := []struct {
		usd  USD
		rate float64
		want int64
	}{
		{NanoPerUSD, 25_000, 25_000},
		{7_000_000, 25_000, 175}, // $0.007
		{20_000, 25_000, 1},      // 0.5 dong rounds up
		{19_999, 25_000, 0},      // just under half
		{NanoPerUSD, 25_400.1, 25_400},
		{-NanoPerUSD, 25_000, -25_000},
	}
	for _, tt := range tests {
		if got := tt.usd.VND(tt.rate); got != tt.want {
			t.Errorf("%v.VND(%v) = %d, want %d", tt.usd, tt.rate, got, tt.want)
		}
	}
	if got, want := USDFromVND(50_000, 25_000), USD(2*NanoPerUSD); got != want {
		t.Errorf("USDFromVND(50000, 25000) = %v, want %v", got, want)
	}
	if got := USDFromVND(1, 0); got != 0 {
		t.Errorf("USDFromVND(1, 0) = %v, want 0", got)
	}
}

func TestUSDString(t *testing.T) {
	for u, want := range map[USD]string{0: "$0.000000000", 1_500_000_000: "$1.500000000",
		-75: "-$0.000000075"} {
		if got := u.String(); got != want {
			t.Errorf("USD(%d).String() = %q, want %q", int64(u), got, want)
		}
	}
}

func TestEstimator(t *testing.T) {
	var e Estimator
	tests := []struct {
		model, text string
		want        int64
	}{
		{"gpt-4o-mini", "", 0},
		{"gpt-4o-mini", "hello world", 2},
		{"gpt-4o", "Xin chào, bạn khỏe không?", 0}, // counted below: just positive
		{"gpt-3.5-turbo", "hello world", 2},
		{"some-other-model", "hello world", 2},
		{"gpt-4o", "\xff\xfe\xfd\xfc", 1}, // invalid UTF-8: the 4-bytes rule
	}
	for _, tt := range tests {
		got := e.Count(tt.model, tt.text)
		if tt.want == 0 && tt.text != "" {
			if got <= 0 {
				t.Errorf("Count(%q, %q) = %d, want > 0", tt.model, tt.text, got)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("Count(%q, %q) = %d, want %d", tt.model, tt.text, got, tt.want)
		}
	}
	u := e.Usage("gpt-4o-mini", "hello world", "hi there")
	if u.PromptTokens != 2 || u.CompletionTokens != 2 {
		t.Errorf("Usage = %+v, want 2 prompt and 2 completion tokens", u)
	}
}
