package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// BudgetOptions configures a [Budget].
type BudgetOptions struct {
	// Redis arbitrates reservations across replicas. Nil means the store does: PostgreSQL
	// serialises them with a conditional UPDATE (any number of replicas), the embedded
	// SQLite store within its one process.
	Redis redis.UniversalClient
	// KeyPrefix prefixes Redis keys. Default "phogate:budget:".
	KeyPrefix string
	// Store loads each month's spent total on first use, and arbitrates when Redis is nil.
	// Required.
	Store Store
	// VNDPerUSD converts VND budgets to USD. Required.
	VNDPerUSD float64
	// TTL is how long an unsettled reservation holds budget. Default 10m.
	TTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Metrics counts reservations. Default: unregistered metrics.
	Metrics *Metrics
}

// Budget reserves estimated costs against users' monthly budgets (calendar months in UTC)
// and settles them with real costs. With Redis, one Lua script checks spent plus reserved
// plus the request against the budget and reserves atomically, so N replicas sharing the
// Redis never let a user spend more than one budget (plus at most the overrun of requests
// whose real cost exceeds their estimate). It is safe for concurrent use.
type Budget struct {
	opts BudgetOptions
	m    *Metrics
}

// Reservation is budget held for one request until [Budget.Settle].
type Reservation struct {
	// ID identifies the reservation.
	ID string
	// UserID is the user charged.
	UserID string
	// Month is the month charged, as "2006-01" in UTC.
	Month string
	// Amount is the amount held.
	Amount USD
	// Remaining is the budget left after the reservation; meaningless when Unlimited.
	Remaining USD
	// Unlimited is true when the user has no budget; nothing is held.
	Unlimited bool
}

// NewBudget returns a budget arbiter.
func NewBudget(o BudgetOptions) (*Budget, error) {
	if o.Store == nil {
		return nil, errors.New("budget: store is required")
	}
	if o.VNDPerUSD <= 0 {
		return nil, errors.New("budget: VND per USD must be above 0")
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "phogate:budget:"
	}
	if o.TTL <= 0 {
		o.TTL = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return &Budget{opts: o, m: o.Metrics}, nil
}

// Limit returns the monthly budget of p given its tier's budget in VND; 0 means unlimited.
func (b *Budget) Limit(p Principal, tierVND int64) USD {
	vnd := tierVND
	if p.MonthlyBudgetVND != nil {
		vnd = *p.MonthlyBudgetVND
	}
	if vnd <= 0 {
		return 0
	}
	return USDFromVND(vnd, b.opts.VNDPerUSD)
}

// Reserve holds amount against p's month, where limit is p's budget from [Budget.Limit]
// (0: unlimited, nothing held). Over budget it returns a [*BudgetExceededError]. ctx bounds
// the Redis or store calls.
func (b *Budget) Reserve(ctx context.Context, p Principal, limit, amount USD) (*Reservation, error) {
	now := b.opts.Now()
	month, _, _ := monthOf(now)
	r := &Reservation{ID: newReservationID(), UserID: p.UserID, Month: month,
		Amount: max(amount, 0)}
	if limit <= 0 {
		r.Unlimited = true
		b.m.reservations.WithLabelValues("unlimited").Inc()
		return r, nil
	}
	var err error
	if b.opts.Redis != nil {
		r.Remaining, err = b.reserveRedis(ctx, r, limit, now)
	} else {
		r.Remaining, err = b.opts.Store.ReserveBudget(ctx, BudgetReservation{
			ID: r.ID, User: r.UserID, Month: month, Amount: r.Amount, Budget: limit,
			Now: now, Expires: now.Add(b.opts.TTL),
		})
	}
	var be *BudgetExceededError
	switch {
	case errors.As(err, &be):
		be.RemainingVND = be.Remaining.VND(b.opts.VNDPerUSD)
		b.m.reservations.WithLabelValues("exceeded").Inc()
		return nil, be
	case err != nil:
		b.m.reservations.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("reserving budget: %w", err)
	}
	b.m.reservations.WithLabelValues("ok").Inc()
	return r, nil
}

// Settle replaces r with the actual cost, releasing the rest (or charging the overrun).
// Settling a reservation that expired charges the cost alone. ctx bounds the call.
func (b *Budget) Settle(ctx context.Context, r *Reservation, actual USD) error {
	if r == nil || r.Unlimited {
		return nil
	}
	actual = max(actual, 0)
	if b.opts.Redis != nil {
		keys := b.keys(r.UserID, r.Month)
		err := settleScript.Run(ctx, b.opts.Redis, keys, r.ID, int64(actual)).Err()
		if err != nil {
			return fmt.Errorf("settling budget: %w", err)
		}
		return nil
	}
	if err := b.opts.Store.SettleBudget(ctx, r.ID, r.UserID, r.Month, actual); err != nil {
		return fmt.Errorf("settling budget: %w", err)
	}
	return nil
}

// Release gives r back unused, for a request that was not served.
func (b *Budget) Release(ctx context.Context, r *Reservation) error { return b.Settle(ctx, r, 0) }

func (b *Budget) keys(user, month string) []string {
	// The hash tag keeps a user's keys in one Redis Cluster slot, as the scripts need.
	k := b.opts.KeyPrefix + "{" + user + ":" + month + "}"
	return []string{k, k + ":expiry"}
}

// reserveRedis runs the reserve script, loading the month's spent total from the store when
// Redis does not have it yet.
func (b *Budget) reserveRedis(ctx context.Context, r *Reservation, limit USD,
	now time.Time) (USD, error) {
	keys := b.keys(r.UserID, r.Month)
	_, _, end := monthOf(now)
	// Keep the month's keys a day past its end, and never shorter than a reservation.
	keyTTL := int64(max(end.Sub(now)+24*time.Hour, 2*b.opts.TTL) / time.Second)
	for attempt := 0; attempt < 2; attempt++ {
		res, err := reserveScript.Run(ctx, b.opts.Redis, keys, int64(r.Amount), int64(limit),
			r.ID, now.UnixMilli(), now.Add(b.opts.TTL).UnixMilli(), keyTTL).Int64Slice()
		if err != nil {
			return 0, err
		}
		switch res[0] {
		case 1:
			return USD(res[1]), nil
		case 0:
			return 0, &BudgetExceededError{Budget: limit, Remaining: USD(max(res[1], 0)),
				Requested: r.Amount}
		}
		// The month is not loaded: sum its stored usage, and let the first replica win.
		mu, err := b.opts.Store.MonthlyUsage(ctx, r.UserID, now)
		if err != nil {
			return 0, fmt.Errorf("loading month: %w", err)
		}
		if err := loadScript.Run(ctx, b.opts.Redis, keys, int64(mu.Cost), keyTTL).Err(); err != nil {
			return 0, fmt.Errorf("loading month: %w", err)
		}
	}
	return 0, errors.New("month key vanished while loading")
}

func newReservationID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Redis layout per user and month: a hash KEYS[1] with "spent" and "reserved" totals and one
// "r:<id>" field per open reservation holding its amount, and a sorted set KEYS[2] of open
// reservation IDs scored by expiry in unix milliseconds. Amounts are nano-USD; Lua compares
// them as doubles, exact below 2^53 nano-USD (about 9 million dollars), and pass amounts to
// redis.call as the strings they arrived as, since Lua prints large numbers in exponent form.
var (
	// reserveScript: ARGV amount, budget, id, now_ms, expires_ms, key_ttl_s. Returns
	// {1, left} when reserved, {0, left} when over budget, {-1, 0} when not loaded.
	reserveScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'spent') == 0 then return {-1, 0} end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
for _, id in ipairs(expired) do
  local amt = redis.call('HGET', KEYS[1], 'r:' .. id)
  if amt then
    redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. amt)
    redis.call('HDEL', KEYS[1], 'r:' .. id)
  end
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4]) end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local amount = tonumber(ARGV[1])
local left = tonumber(ARGV[2]) - spent - reserved
if amount > left then return {0, left} end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
redis.call('HSET', KEYS[1], 'r:' .. ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, left - amount}
`)

	// loadScript: ARGV spent, key_ttl_s. Sets the month's spent total unless present.
	loadScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
`)

	// settleScript: ARGV id, actual. Releases the reservation and charges actual.
	settleScript = redis.NewScript(`
local amt = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if amt then
  redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. amt)
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if redis.call('HEXISTS', KEYS[1], 'spent') == 1 then
  redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
end
return 1
`)
)
