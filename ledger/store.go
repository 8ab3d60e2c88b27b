package ledger

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
)

// Store keeps users, tiers, API keys, monthly budgets and usage rows. [OpenPostgres] and
// [OpenSQLite] implement it; both are safe for concurrent use.
//
// Every method's ctx bounds that call only.
type Store interface {
	// LookupKey returns the owner of the API key with hash h, or [ErrNotFound].
	LookupKey(ctx context.Context, h KeyHash) (Principal, error)
	// PutKey stores an API key by its hash for user, creating the user on tier when new.
	// Storing the same key again moves it to user.
	PutKey(ctx context.Context, h KeyHash, user, tier string) error
	// PutUser creates or replaces a user.
	PutUser(ctx context.Context, u User) error
	// User returns the user with id, or [ErrNotFound].
	User(ctx context.Context, id string) (User, error)
	// PutTiers records the configured tiers and their budgets, replacing earlier values.
	PutTiers(ctx context.Context, tiers []Tier) error
	// WriteUsage stores rows in one transaction and returns how many were new. Rows whose
	// request ID is already stored are skipped, so a batch may be written again safely.
	WriteUsage(ctx context.Context, rows []Row) (int64, error)
	// MonthlyUsage sums a user's usage rows in the calendar month (UTC) holding t.
	MonthlyUsage(ctx context.Context, user string, t time.Time) (MonthlyUsage, error)
	// ReserveBudget atomically reserves r.Amount against the user's month when spent plus
	// reserved plus the amount stays within r.Budget, first releasing expired reservations.
	// It returns the budget left after the reservation, or a [*BudgetExceededError].
	ReserveBudget(ctx context.Context, r BudgetReservation) (USD, error)
	// SettleBudget replaces reservation id with the actual cost. Settling an unknown or
	// expired reservation adds the cost alone.
	SettleBudget(ctx context.Context, id, user, month string, actual USD) error
	// Close releases the store's connections.
	Close() error
}

// ErrNotFound is returned by [Store] lookups that find nothing.
var ErrNotFound = errors.New("ledger: not found")

// KeyHash is the SHA-256 hash of an API key. Stores keep only hashes, never keys.
type KeyHash [sha256.Size]byte

// HashKey returns the hash under which key is stored.
func HashKey(key string) KeyHash { return sha256.Sum256([]byte(key)) }

// Principal is an identified caller.
type Principal struct {
	// UserID identifies the user.
	UserID string
	// Tier is the user's tier.
	Tier string
	// MonthlyBudgetVND overrides the tier's monthly budget when not nil.
	MonthlyBudgetVND *int64
}

// User is a stored user.
type User struct {
	// ID identifies the user.
	ID string
	// Tier is the user's tier.
	Tier string
	// MonthlyBudgetVND overrides the tier's budget when not nil.
	MonthlyBudgetVND *int64
}

// Tier is the stored form of a configured tier.
type Tier struct {
	// Name identifies the tier.
	Name string
	// MonthlyBudgetVND is the tier's monthly budget; 0 means unlimited.
	MonthlyBudgetVND int64
}

// MonthlyUsage is a user's usage in one calendar month.
type MonthlyUsage struct {
	// Requests counts usage rows.
	Requests int64
	// Usage sums the token counts.
	Usage Usage
	// Cost sums the costs.
	Cost USD
}

// BudgetReservation asks [Store.ReserveBudget] for an amount.
type BudgetReservation struct {
	// ID identifies the reservation.
	ID string
	// User is the user whose month is charged.
	User string
	// Month is the month as "2006-01" in UTC.
	Month string
	// Amount is the amount to reserve.
	Amount USD
	// Budget is the user's monthly budget.
	Budget USD
	// Now is the current time; reservations that expired before it are released first.
	Now time.Time
	// Expires is when this reservation lapses unless settled.
	Expires time.Time
}

// monthOf returns the month key and the bounds of the calendar month (UTC) holding t.
func monthOf(t time.Time) (key string, start, end time.Time) {
	t = t.UTC()
	start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start.Format("2006-01"), start, start.AddDate(0, 1, 0)
}

// validateRows rejects rows no store can take.
func validateRows(rows []Row) error {
	for i, r := range rows {
		if r.RequestID == "" {
			return fmt.Errorf("row %d: empty request ID", i)
		}
	}
	return nil
}
