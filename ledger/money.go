package ledger

import (
	"fmt"
	"math"
	"math/big"
	"strconv"

	"github.com/phochat/phogate/internal/config"
)

// USD is an amount of money in nano-dollars (1e-9 USD). An int64 holds about ±9.2 billion
// dollars, and a token of the cheapest listed model costs a whole number of nano-dollars, so
// costs add up exactly.
type USD int64

// NanoPerUSD is the number of [USD] units in one dollar.
const NanoPerUSD = 1_000_000_000

// tokensPerPriceUnit is the number of tokens a [Price] is quoted for.
const tokensPerPriceUnit = 1_000_000

// USDFromFloat converts a dollar amount, rounding to the nearest nano-dollar. NaN and values
// out of range give 0 and false.
func USDFromFloat(d float64) (USD, bool) {
	n := math.Round(d * NanoPerUSD)
	if math.IsNaN(n) || n > math.MaxInt64 || n < math.MinInt64 {
		return 0, false
	}
	return USD(n), true
}

// Dollars returns the amount as a float, for display and metrics only.
func (u USD) Dollars() float64 { return float64(u) / NanoPerUSD }

// String formats the amount as dollars with nine decimals, such as "$0.000150000".
func (u USD) String() string {
	sign := ""
	n := int64(u)
	if n < 0 {
		sign = "-"
		n = -n // MinInt64 has no positive twin; it prints oddly but never panics
	}
	return fmt.Sprintf("%s$%d.%09d", sign, n/NanoPerUSD, n%NanoPerUSD)
}

// VND converts the amount to whole Vietnamese dong at rate dong per dollar, rounding half
// away from zero.
func (u USD) VND(rate float64) int64 {
	r := new(big.Rat).SetInt64(int64(u))
	r.Mul(r, ratFromFloat(rate))
	r.Quo(r, new(big.Rat).SetInt64(NanoPerUSD))
	return roundRat(r)
}

// USDFromVND converts whole dong at rate dong per dollar to [USD], rounding to the nearest
// nano-dollar. A rate of zero or less gives 0.
func USDFromVND(vnd int64, rate float64) USD {
	if rate <= 0 {
		return 0
	}
	r := new(big.Rat).SetInt64(vnd)
	r.Mul(r, new(big.Rat).SetInt64(NanoPerUSD))
	r.Quo(r, ratFromFloat(rate))
	return USD(roundRat(r))
}

// ratFromFloat converts through the shortest decimal form, so 25400.1 is exactly 254001/10
// and not its binary neighbour.
func ratFromFloat(f float64) *big.Rat {
	r, ok := new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 64))
	if !ok {
		return new(big.Rat)
	}
	return r
}

// roundRat rounds half away from zero and clamps to int64.
func roundRat(r *big.Rat) int64 {
	num, den := new(big.Int).Set(r.Num()), r.Denom()
	half := new(big.Int).Rsh(den, 1)
	if num.Sign() >= 0 {
		num.Add(num, half)
	} else {
		num.Sub(num, half)
	}
	q := new(big.Int).Quo(num, den)
	switch {
	case q.IsInt64():
		return q.Int64()
	case q.Sign() > 0:
		return math.MaxInt64
	default:
		return math.MinInt64
	}
}

// Price is a model's price per one million tokens, in [USD].
type Price struct {
	// Input is the price of prompt tokens not served from the provider's prompt cache.
	Input USD
	// Output is the price of completion tokens.
	Output USD
	// CachedInput is the price of prompt tokens served from the provider's prompt cache.
	CachedInput USD
}

// PriceFromConfig converts a configured price (float dollars per million tokens) to exact
// units, rounding each to the nearest nano-dollar per million tokens. A missing cached price
// is the input price.
func PriceFromConfig(p config.Price) Price {
	in, _ := USDFromFloat(p.Input)
	out, _ := USDFromFloat(p.Output)
	cached := in
	if p.CachedInput != nil {
		cached, _ = USDFromFloat(*p.CachedInput)
	}
	return Price{Input: in, Output: out, CachedInput: cached}
}

// Usage is the token count of one request.
type Usage struct {
	// PromptTokens counts every prompt token, cached or not (OpenAI's prompt_tokens).
	PromptTokens int64
	// CompletionTokens counts generated tokens (OpenAI's completion_tokens).
	CompletionTokens int64
	// CachedPromptTokens is the part of PromptTokens the provider served from its prompt
	// cache (OpenAI's prompt_tokens_details.cached_tokens).
	CachedPromptTokens int64
}

// Total returns prompt plus completion tokens.
func (u Usage) Total() int64 { return u.PromptTokens + u.CompletionTokens }

// Cost returns what u costs at price p: uncached prompt tokens at the input price, cached
// prompt tokens at the cached price and completion tokens at the output price. The sum is
// computed exactly and rounded once, half up, to a nano-dollar. Negative counts count as
// zero, cached tokens are capped at the prompt tokens, and a result beyond int64 saturates.
func Cost(p Price, u Usage) USD {
	prompt := max(u.PromptTokens, 0)
	cached := min(max(u.CachedPromptTokens, 0), prompt)
	completion := max(u.CompletionTokens, 0)

	sum := new(big.Int)
	term := new(big.Int)
	add := func(tokens int64, price USD) {
		term.SetInt64(tokens)
		sum.Add(sum, term.Mul(term, big.NewInt(int64(price))))
	}
	add(prompt-cached, p.Input)
	add(cached, p.CachedInput)
	add(completion, p.Output)
	return USD(roundRat(new(big.Rat).SetFrac(sum, big.NewInt(tokensPerPriceUnit))))
}
