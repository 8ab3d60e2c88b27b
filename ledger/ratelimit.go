package ledger

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// Limits are the per-minute limits that apply to one request; 0 means unlimited.
type Limits struct {
	// UserRPM and UserTPM limit one user's requests and tokens per minute.
	UserRPM, UserTPM int
	// TierRPM and TierTPM limit all users of a tier together.
	TierRPM, TierTPM int
}

// RateLimiter enforces requests- and tokens-per-minute limits with the generic cell rate
// algorithm: in Redis (shared by every replica) when it has a client, otherwise in process.
// It is safe for concurrent use.
type RateLimiter struct {
	redis  *redis_rate.Limiter
	prefix string
	now    func() time.Time

	mu    sync.Mutex
	local *lru.Cache[string, *rate.Limiter]
}

// NewRateLimiter returns a limiter using rdb, or in-process buckets when rdb is nil. now is
// the clock for in-process buckets; nil means time.Now.
func NewRateLimiter(rdb redis.UniversalClient, now func() time.Time) *RateLimiter {
	if now == nil {
		now = time.Now
	}
	// 100k buckets is about 10 MB; the least recently used are forgotten first, which
	// forgives only users idle long enough to have a full bucket anyway.
	local, _ := lru.New[string, *rate.Limiter](100_000) // fails only for size <= 0
	l := &RateLimiter{prefix: "phogate:rl:", now: now, local: local}
	if rdb != nil {
		l.redis = redis_rate.NewLimiter(rdb)
	}
	return l
}

// Allow charges one request of tokens tokens against user's and tier's limits, returning a
// [*RateLimitedError] for the first limit that refuses. Earlier limits stay charged. ctx
// bounds the Redis calls.
func (l *RateLimiter) Allow(ctx context.Context, user, tier string, lim Limits, tokens int64) error {
	checks := []struct {
		reason, key string
		perMin      int
		n           int64
	}{
		{"user_rpm", "u:" + user + ":rpm", lim.UserRPM, 1},
		{"tier_rpm", "t:" + tier + ":rpm", lim.TierRPM, 1},
		{"user_tpm", "u:" + user + ":tpm", lim.UserTPM, tokens},
		{"tier_tpm", "t:" + tier + ":tpm", lim.TierTPM, tokens},
	}
	for _, c := range checks {
		if c.perMin <= 0 || c.n <= 0 {
			continue
		}
		// A request larger than the whole bucket is allowed once the bucket is full, rather
		// than never.
		n := int(min(c.n, int64(c.perMin)))
		wait, err := l.take(ctx, c.key, c.perMin, n)
		if err != nil {
			return fmt.Errorf("checking rate limit: %w", err)
		}
		if wait > 0 {
			return &RateLimitedError{Reason: c.reason, RetryAfter: max(wait, time.Second)}
		}
	}
	return nil
}

// take takes n from the bucket key refilled at perMin a minute, returning how long to wait
// when it cannot.
func (l *RateLimiter) take(ctx context.Context, key string, perMin, n int) (time.Duration, error) {
	if l.redis != nil {
		res, err := l.redis.AllowN(ctx, l.prefix+key, redis_rate.PerMinute(perMin), n)
		if err != nil {
			return 0, err
		}
		if res.Allowed > 0 {
			return 0, nil
		}
		return max(res.RetryAfter, time.Millisecond), nil
	}
	now := l.now()
	lk := fmt.Sprintf("%s/%d", key, perMin)
	l.mu.Lock()
	b, ok := l.local.Get(lk)
	if !ok {
		b = rate.NewLimiter(rate.Limit(float64(perMin)/60), perMin)
		l.local.Add(lk, b)
	}
	l.mu.Unlock()
	r := b.ReserveN(now, n)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, nil
	}
	return 0, nil
}
