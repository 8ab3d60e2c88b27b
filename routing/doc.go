// Package routing chooses the model that serves a chat request, weighing answer quality,
// cost, speed and the user's preference. It takes and returns plain Go values and knows
// nothing of Envoy, gRPC or any store, so it can be tested and benchmarked alone.
//
// # When the router chooses
//
// A request naming a model its tier may use (ledger.tiers[].models, empty meaning all) gets
// that model. A request naming the auto model (routing.auto_model, "auto" by default) gets
// the best candidate: the models under routing.candidates (every chat model by default) that
// its tier may use. A request naming a model its tier may not use is refused with
// [ErrModelNotAllowed], or, when the tier's routing.tiers[].explicit_disallowed is
// "downgrade", gets the best candidate as for the auto model, marked Downgraded.
//
// # The score
//
// Each candidate m gets four parts, each from 0 to 1, and the weighted sum
//
//	score(m) = w_quality·Q(m) + w_cost'·C(m) + w_speed·S(m) + w_preference·P(m)
//
// with weights from routing.weights (0.4, 0.3, 0.2 and 0.1 by default). The highest score
// wins; ties go to the cheaper model.
//
// Quality. [Assess] turns the question into a complexity c from 0 to 1 (see below). The
// quality the question needs rises with c: at or below routing.complexity.simple it is the
// weakest candidate's quality, at or above routing.complexity.complex the strongest's, and
// linear between. A model meeting the need scores 1; one falling short loses in proportion
// to the shortfall, reaching 0 for a shortfall as wide as the candidates' quality range:
//
//	need = q_min + (q_max − q_min) · clamp((c − simple) / (complex − simple))
//	Q(m) = 1 − max(0, need − quality(m)) / (q_max − q_min)
//
// So on a simple question every model is good enough and cost and speed decide, while on a
// complex one a weaker model loses up to the whole quality weight. quality(m) is the model's
// configured quality (models[].quality, by default 0.6, 0.75 and 0.9 for the budget,
// standard and premium tiers).
//
// Cost. The request's cost on m is estimated as input tokens (counted by the caller, or one
// per four bytes of text) times the input price plus output tokens (max_tokens, or
// ledger.default_output_tokens) times the output price. C(m) = 1 − cost(m)/cost_max, so the
// most expensive candidate scores 0. A candidate whose cost exceeds the user's remaining
// budget is left out, unless all are, when only the cheapest remains. Budget pressure
// raises the cost weight as the budget runs out:
//
//	pressure = clamp(1 − remaining / (routing.low_budget_requests · cost_max))
//	w_cost'  = w_cost · (1 + 2·pressure)
//
// after which the four weights are scaled back to sum to 1. Unlimited budgets have pressure 0.
//
// Speed. A [LatencyStats] keeps each model's moving averages of time to first token and time
// per output token; the expected time of the answer is TTFT + output tokens × per-token time,
// and S(m) = fastest expected time / m's expected time. A model not yet measured gets the
// mean of the measured ones; with no measurements every model gets 1.
//
// Preference. With no hint P(m) = 0.5 for every model. "cheap", "fast" and "quality" rate the
// models on that axis from 0 (worst candidate) to 1 (best), so the hint moves the preference
// weight onto cost, speed or quality.
//
// # Complexity
//
// [Assess] reads the last user message once, without allocating, and counts: words (≈
// tokens), code markers (fences, code words such as "function" or "lập trình", braces and
// semicolons), math markers (numbers, operators, math words, money and percent signs, and
// quantity questions such as "how many" or "bao nhiêu"), reasoning cues ("why", "prove",
// "compare", "explain", "step by step", "tại sao", "giải thích", "chứng minh", "so sánh",
// "từng bước", ...), and Vietnamese diacritics. From the whole conversation it counts the user
// turns and the words of system prompts. Each signal becomes a feature from 0 to 1, and the
// features combine as a noisy OR, 1 − Π(1 − weight·feature), so that one strong signal makes a
// question complex and several weak ones add up.
package routing
