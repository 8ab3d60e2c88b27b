package ledger

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors callers act on. Test with [errors.Is]; the typed errors below carry detail.
var (
	// ErrUnauthenticated means the request carries no credential, or one the ledger does not
	// know. The caller answers 401.
	ErrUnauthenticated = errors.New("ledger: unauthenticated")
	// ErrBudgetExceeded means the request would take the user over the monthly budget. The
	// error is a [*BudgetExceededError]; the caller answers 429. ([Ledger.Admit] has already
	// tried the tier's downgrade model when the tier allows one.)
	ErrBudgetExceeded = errors.New("ledger: monthly budget exceeded")
	// ErrRateLimited means a rate limit refused the request. The error is a
	// [*RateLimitedError]; the caller answers 429 with Retry-After.
	ErrRateLimited = errors.New("ledger: rate limited")
)

// BudgetExceededError is returned when a reservation would exceed the monthly budget.
type BudgetExceededError struct {
	// Budget is the user's monthly budget.
	Budget USD
	// Remaining is what is left of it (spent and reserved amounts subtracted); it may be 0.
	Remaining USD
	// RemainingVND is Remaining in dong at the configured rate.
	RemainingVND int64
	// Requested is the estimated cost that did not fit.
	Requested USD
}

func (e *BudgetExceededError) Error() string {
	return fmt.Sprintf("ledger: monthly budget exceeded: %s requested, %s remaining",
		e.Requested, e.Remaining)
}

// Is makes errors.Is(err, [ErrBudgetExceeded]) true.
func (e *BudgetExceededError) Is(target error) bool { return target == ErrBudgetExceeded }

// RateLimitedError is returned when a rate limit refuses a request.
type RateLimitedError struct {
	// Reason names the limit: "user_rpm", "user_tpm", "tier_rpm" or "tier_tpm".
	Reason string
	// RetryAfter is when the request would be allowed; at least one second.
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("ledger: rate limited (%s), retry after %s", e.Reason, e.RetryAfter)
}

// Is makes errors.Is(err, [ErrRateLimited]) true.
func (e *RateLimitedError) Is(target error) bool { return target == ErrRateLimited }
