package ledger

import (
	"log/slog"
	"time"
)

// Row is the usage record of one served request. The ledger stores each request ID once:
// writing the same row again changes nothing.
type Row struct {
	// RequestID identifies the request; unique in the store. Required.
	RequestID string `json:"request_id"`
	// UserID is the caller.
	UserID string `json:"user_id"`
	// Tier is the caller's tier at the time of the request.
	Tier string `json:"tier"`
	// RequestedModel is the model the client asked for.
	RequestedModel string `json:"requested_model"`
	// ServedModel is the model that answered, after routing or a downgrade.
	ServedModel string `json:"served_model"`
	// Provider is the provider that answered; empty for a cache hit.
	Provider string `json:"provider"`
	// Usage is the token count, reported by the provider or estimated.
	Usage Usage `json:"usage"`
	// Cost is what the request cost; 0 for a cache hit.
	Cost USD `json:"cost"`
	// CacheLayer is the gateway cache layer that answered ("memory", "redis", "semantic"),
	// or empty when the provider answered.
	CacheLayer string `json:"cache_layer"`
	// Latency is the time from request to last byte.
	Latency time.Duration `json:"latency"`
	// Status is the HTTP status returned to the client.
	Status int `json:"status"`
	// Estimated is true when Usage was counted with the tokenizer because the provider
	// reported none.
	Estimated bool `json:"estimated"`
	// Time is when the request arrived.
	Time time.Time `json:"time"`
}

// LogValue lists the row's accounting fields for logs; it holds no content or secrets, but
// the user ID is left out to keep logs free of personal data.
func (r Row) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("request_id", r.RequestID),
		slog.String("served_model", r.ServedModel),
		slog.Int64("prompt_tokens", r.Usage.PromptTokens),
		slog.Int64("completion_tokens", r.Usage.CompletionTokens),
		slog.Int64("cost_nano_usd", int64(r.Cost)),
	)
}
