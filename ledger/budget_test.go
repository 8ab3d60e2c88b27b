package ledger

import (
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func newRedisBudget(t *testing.T, rdb *redis.Client, st Store, now func() time.Time) *Budget {
	t.Helper()
	b, err := NewBudget(BudgetOptions{Redis: rdb, Store: st, VNDPerUSD: 25_000,
		TTL: time.Minute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBudgetTwoReplicas runs 200 parallel reservations for one user through two Budget
// values sharing Redis, as two gateway replicas would, with usage already stored this month.
func TestBudgetTwoReplicas(t *testing.T) {
	ctx := testContext(t)
	st, err := OpenPostgres(ctx, PostgresOptions{DSN: postgresURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	const (
		cost   = USD(3_000_000) // $0.003 a request
		spent  = USD(10_000_000)
		budget = USD(100_000_000) // $0.10: room for 30 requests after the $0.01 spent
	)
	if _, err := st.WriteUsage(ctx, []Row{usageRow("earlier", "gina", now, spent)}); err != nil {
		t.Fatal(err)
	}
	// Two replicas: two Budget values, each with its own connection to the same Redis.
	rdb := redisClient(t)
	rdb2 := redis.NewClient(rdb.Options())
	defer rdb2.Close()
	replicas := []*Budget{newRedisBudget(t, rdb, st, nil), newRedisBudget(t, rdb2, st, nil)}
	p := Principal{UserID: "gina", Tier: "free"}

	var ok, over atomic.Int64
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			b := replicas[i%2]
			r, err := b.Reserve(ctx, p, budget, cost)
			var be *BudgetExceededError
			switch {
			case errors.As(err, &be):
				over.Add(1)
				return
			case err != nil:
				t.Errorf("Reserve: %v", err)
				return
			}
			ok.Add(1)
			if err := b.Settle(ctx, r, cost); err != nil {
				t.Errorf("Settle: %v", err)
			}
		})
	}
	wg.Wait()
	total := spent + USD(ok.Load())*cost
	if total > budget+cost {
		t.Errorf("spent %v of a %v budget: more than one request over", total, budget)
	}
	if ok.Load() != 30 || over.Load() != 170 {
		t.Errorf("%d reservations succeeded and %d were refused, want 30 and 170", ok.Load(),
			over.Load())
	}
	// The next request sees the budget used up, on either replica.
	_, err = replicas[0].Reserve(ctx, p, budget, 1)
	var be *BudgetExceededError
	if !errors.As(err, &be) || be.Remaining != 0 || be.RemainingVND != 0 {
		t.Errorf("Reserve after the run = %v, want BudgetExceededError with nothing left", err)
	}
}

func TestBudgetReservationExpires(t *testing.T) {
	for _, arb := range []string{"redis", "store"} {
		t.Run(arb, func(t *testing.T) {
			ctx := testContext(t)
			st, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "l.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var clock atomic.Int64
			clock.Store(time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC).UnixNano())
			now := func() time.Time { return time.Unix(0, clock.Load()) }
			b, err := NewBudget(BudgetOptions{Store: st, VNDPerUSD: 25_000, TTL: time.Minute,
				Now: now})
			if err != nil {
				t.Fatal(err)
			}
			if arb == "redis" {
				b = newRedisBudget(t, redisClient(t), st, now)
			}
			p := Principal{UserID: "hank"}
			if _, err := b.Reserve(ctx, p, 100, 80); err != nil {
				t.Fatalf("Reserve: %v", err)
			}
			if _, err := b.Reserve(ctx, p, 100, 30); !errors.Is(err, ErrBudgetExceeded) {
				t.Fatalf("second Reserve = %v, want ErrBudgetExceeded", err)
			}
			// The first replica crashed and never settles: after the TTL the budget is free.
			clock.Add(int64(2 * time.Minute))
			r, err := b.Reserve(ctx, p, 100, 30)
			if err != nil {
				t.Fatalf("Reserve after expiry: %v", err)
			}
			if r.Remaining != 70 {
				t.Errorf("Remaining = %v, want 70", r.Remaining)
			}
			if err := b.Release(ctx, r); err != nil {
				t.Fatalf("Release: %v", err)
			}
			if r, err := b.Reserve(ctx, p, 100, 100); err != nil || r.Remaining != 0 {
				t.Errorf("Reserve(all) after release = %v, %v, want 0 left", r, err)
			}
		})
	}
}

func TestBudgetLimit(t *testing.T) {
	b, err := NewBudget(BudgetOptions{Store: &SQLite{}, VNDPerUSD: 25_000})
	if err != nil {
		t.Fatal(err)
	}
	override := int64(50_000)
	tests := []struct {
		p       Principal
		tierVND int64
		want    USD
	}{
		{Principal{}, 0, 0},
		{Principal{}, 25_000, NanoPerUSD},
		{Principal{MonthlyBudgetVND: &override}, 25_000, 2 * NanoPerUSD},
	}
	for _, tt := range tests {
		if got := b.Limit(tt.p, tt.tierVND); got != tt.want {
			t.Errorf("Limit(%v, %d) = %v, want %v", tt.p.MonthlyBudgetVND, tt.tierVND, got, tt.want)
		}
	}
	r, err := b.Reserve(testContext(t), Principal{UserID: "x"}, 0, 5)
	if err != nil || !r.Unlimited {
		t.Errorf("Reserve(unlimited) = %+v, %v, want an unlimited reservation", r, err)
	}
}

func TestRateLimiter(t *testing.T) {
	for _, kind := range []string{"redis", "local"} {
		t.Run(kind, func(t *testing.T) {
			ctx := testContext(t)
			var clock atomic.Int64
			clock.Store(time.Now().UnixNano())
			now := func() time.Time { return time.Unix(0, clock.Load()) }
			l := NewRateLimiter(nil, now)
			if kind == "redis" {
				l = NewRateLimiter(redisClient(t), nil)
			}
			user, other := randomName("u"), randomName("u")
			lim := Limits{UserRPM: 3, UserTPM: 1000}
			for i := range 3 {
				if err := l.Allow(ctx, user, "free", lim, 10); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			err := l.Allow(ctx, user, "free", lim, 10)
			var rl *RateLimitedError
			if !errors.As(err, &rl) || rl.Reason != "user_rpm" || rl.RetryAfter < time.Second {
				t.Fatalf("4th request = %v, want a user_rpm RateLimitedError", err)
			}
			if err := l.Allow(ctx, other, "free", lim, 10); err != nil {
				t.Errorf("another user: %v", err)
			}
			err = l.Allow(ctx, other, "free", lim, 995)
			if !errors.As(err, &rl) || rl.Reason != "user_tpm" {
				t.Errorf("over the token limit = %v, want a user_tpm RateLimitedError", err)
			}
			if kind == "local" {
				clock.Add(int64(time.Minute))
				if err := l.Allow(ctx, user, "free", lim, 10); err != nil {
					t.Errorf("a minute later: %v", err)
				}
			}
		})
	}
}
