package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"
)

// Layer names where an answer was found.
type Layer string

// Layers of the exact cache.
const (
	// LayerL1 is the in-process memory of this replica.
	LayerL1 Layer = "l1"
	// LayerL2 is Redis, shared by the replicas.
	LayerL2 Layer = "l2"
)

// Defaults for [Options] fields left zero.
const (
	DefaultL1MaxBytes    = 256 << 20
	DefaultRedisTimeout  = 50 * time.Millisecond
	DefaultCompressAbove = 1024
	DefaultCollapseWait  = 10 * time.Second
	DefaultProbeInterval = time.Second
	DefaultKeyPrefix     = "phogate:cache:"
	// l1Overhead is added to each entry's JSON size when weighing it: the decoded structs
	// take more memory than the JSON text.
	l1Overhead = 512
)

// Options configure a [Cache].
type Options struct {
	// Redis is the second layer, shared by replicas; nil means memory only. The cache does not
	// close it.
	Redis *redis.Client
	// RedisTimeout bounds each Redis call; a slower Redis is treated as down. Default 50ms.
	RedisTimeout time.Duration
	// KeyPrefix starts every Redis key of the cache. Default "phogate:cache:".
	KeyPrefix string
	// L1MaxBytes bounds the memory layer, counting each answer's JSON size. Default 256 MiB.
	L1MaxBytes int64
	// CompressAbove compresses stored values whose JSON is larger, in bytes. Default 1024.
	CompressAbove int
	// Collapse makes identical requests in flight wait for the first (see [Cache.Begin]).
	Collapse bool
	// CollapseWait bounds how long a request waits for an identical one. Default 10s.
	CollapseWait time.Duration
	// PollInterval is how often a request waiting on another replica re-reads Redis, should a
	// notification be lost. Default CollapseWait/5.
	PollInterval time.Duration
	// ProbeInterval is how often a Redis found down is probed. Default 1s.
	ProbeInterval time.Duration
	// Logger receives the Redis outage warnings. Default: discard.
	Logger *slog.Logger
	// Metrics receives the cache metrics. Default: unregistered metrics.
	Metrics *Metrics
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (o *Options) applyDefaults() {
	if o.RedisTimeout <= 0 {
		o.RedisTimeout = DefaultRedisTimeout
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if o.L1MaxBytes <= 0 {
		o.L1MaxBytes = DefaultL1MaxBytes
	}
	if o.CompressAbove <= 0 {
		o.CompressAbove = DefaultCompressAbove
	}
	if o.CollapseWait <= 0 {
		o.CollapseWait = DefaultCollapseWait
	}
	if o.PollInterval <= 0 {
		o.PollInterval = max(o.CollapseWait/5, 10*time.Millisecond)
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Cache is the exact response cache: an in-process layer in front of an optional Redis layer,
// with collapsing of identical requests in flight. Redis trouble never reaches the caller:
// the cache then works from memory alone and probes Redis until it answers again.
//
// A Cache is safe for concurrent use. Call [Cache.Close] to stop its goroutines.
type Cache struct {
	opts    Options
	log     *slog.Logger
	m       *Metrics
	l1      *otter.Cache[string, *record]
	rdb     *redis.Client
	redisUp atomic.Bool

	ctx    context.Context // cancelled by Close; ends the goroutines the cache owns
	cancel context.CancelFunc
	wg     sync.WaitGroup

	l1Bytes atomic.Int64
	probing atomic.Bool
	flights flightTable
}

// New creates a cache. With opts.Redis set it subscribes to the flight notifications of the
// other replicas.
func New(opts Options) (*Cache, error) {
	opts.applyDefaults()
	c := &Cache{
		opts: opts,
		log:  opts.Logger.With("component", "cache"),
		m:    opts.Metrics,
		rdb:  opts.Redis,
	}
	l1, err := otter.New(&otter.Options[string, *record]{
		MaximumWeight: uint64(opts.L1MaxBytes),
		Weigher:       func(_ string, r *record) uint32 { return uint32(weight(r)) },
		ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[string, *record]) time.Duration {
			return max(e.Value.expires.Sub(opts.Now()), time.Millisecond)
		}),
		// Runs as part of every deletion, replacement included, so the byte count is exact.
		OnAtomicDeletion: func(e otter.DeletionEvent[string, *record]) {
			c.addL1Bytes(-weight(e.Value))
			if e.Cause == otter.CauseOverflow {
				c.m.evictions.WithLabelValues(string(LayerL1)).Inc()
			}
		},
		Logger: slogOtter{c.log},
	})
	if err != nil {
		return nil, fmt.Errorf("creating memory cache: %w", err)
	}
	c.l1 = l1
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.flights.init()
	if c.rdb != nil {
		c.redisUp.Store(true)
		c.m.redisUp.Set(1)
		c.startSubscriber()
	}
	return c, nil
}

// Close stops the cache's goroutines and wakes every waiting request, which then goes
// upstream itself. The Redis client stays open.
func (c *Cache) Close() {
	c.cancel()
	c.wg.Wait()
	c.l1.StopAllGoroutines()
}

// Lookup returns the answer stored under key, from memory or else from Redis; a Redis hit is
// copied into memory. Any failure counts as a miss. The returned entry is shared: do not
// modify it. ctx bounds the Redis call, together with [Options.RedisTimeout].
func (c *Cache) Lookup(ctx context.Context, key Key) (*Entry, Layer, bool) {
	r, layer, ok := c.lookup(ctx, key)
	if !ok {
		return nil, "", false
	}
	return r.entry, layer, true
}

// LookupFresh is [Cache.Lookup] for a request that accepts answers at most maxAge old (its
// Cache-Control max-age); an older answer is a miss. maxAge <= 0 means any age.
func (c *Cache) LookupFresh(ctx context.Context, key Key, maxAge time.Duration) (*Entry, Layer, bool) {
	r, layer, ok := c.lookup(ctx, key)
	if !ok || (maxAge > 0 && c.opts.Now().Sub(r.storedAt) > maxAge) {
		return nil, "", false
	}
	return r.entry, layer, true
}

// lookupQuiet is lookup without metrics, for the second lookup of [Cache.Begin].
func (c *Cache) lookupQuiet(ctx context.Context, key Key) (*record, Layer, bool) {
	if r, ok := c.l1.GetIfPresent(key.ID); ok && c.opts.Now().Before(r.expires) {
		return r, LayerL1, true
	}
	if r, _ := c.getL2(ctx, key); r != nil {
		c.setL1(key, r)
		return r, LayerL2, true
	}
	return nil, "", false
}

func (c *Cache) lookup(ctx context.Context, key Key) (*record, Layer, bool) {
	if !key.Cacheable() {
		return nil, "", false
	}
	if r, ok := c.l1.GetIfPresent(key.ID); ok && c.opts.Now().Before(r.expires) {
		c.m.lookups.WithLabelValues(string(LayerL1), resultHit).Inc()
		return r, LayerL1, true
	}
	c.m.lookups.WithLabelValues(string(LayerL1), resultMiss).Inc()

	r, err := c.getL2(ctx, key)
	switch {
	case errors.Is(err, errRedisSkipped):
		return nil, "", false
	case err != nil:
		c.m.lookups.WithLabelValues(string(LayerL2), resultError).Inc()
		return nil, "", false
	case r == nil:
		c.m.lookups.WithLabelValues(string(LayerL2), resultMiss).Inc()
		return nil, "", false
	}
	c.m.lookups.WithLabelValues(string(LayerL2), resultHit).Inc()
	c.setL1(key, r)
	return r, LayerL2, true
}

// Store saves the answer under key for ttl, in memory and in Redis. Only an uncacheable key,
// a nil entry or an entry that cannot be encoded is an error; Redis trouble is not (it is
// counted and logged once per outage). A ttl <= 0 stores nothing. ctx bounds the Redis call.
// The cache keeps e: do not modify it afterwards.
func (c *Cache) Store(ctx context.Context, key Key, e *Entry, ttl time.Duration) error {
	if !key.Cacheable() {
		return fmt.Errorf("storing cache entry: key is %s", key)
	}
	if e == nil {
		return errors.New("storing cache entry: nil entry")
	}
	if ttl <= 0 {
		return nil
	}
	now := c.opts.Now()
	r := &record{entry: e, storedAt: now, expires: now.Add(ttl)}
	val, size, err := encodeValue(r, c.opts.CompressAbove)
	if err != nil {
		c.m.stores.WithLabelValues(string(LayerL1), resultError).Inc()
		return err
	}
	r.size = size
	c.setL1(key, r)
	c.m.stores.WithLabelValues(string(LayerL1), resultOK).Inc()
	c.setL2(ctx, key, val, ttl)
	return nil
}

func (c *Cache) setL1(key Key, r *record) {
	c.addL1Bytes(weight(r))
	c.l1.Set(key.ID, r)
}

// weight is the memory an entry is counted for.
func weight(r *record) int64 { return int64(r.size + l1Overhead) }

func (c *Cache) addL1Bytes(n int64) {
	c.m.bytes.WithLabelValues(string(LayerL1)).Set(float64(c.l1Bytes.Add(n)))
}

// errRedisSkipped means Redis was not asked: there is none, or it is down.
var errRedisSkipped = errors.New("redis skipped")

func (c *Cache) redisKey(key Key) string { return c.opts.KeyPrefix + "v:" + key.ID }

// getL2 reads key from Redis: a nil record and nil error is a miss.
func (c *Cache) getL2(ctx context.Context, key Key) (*record, error) {
	if !c.redisReady() {
		return nil, errRedisSkipped
	}
	rctx, cancel := context.WithTimeout(ctx, c.opts.RedisTimeout)
	defer cancel()
	b, err := c.rdb.Get(rctx, c.redisKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		c.redisFailed(ctx, err)
		return nil, err
	}
	c.redisWorked()
	r, err := decodeValue(b)
	if err != nil || !c.opts.Now().Before(r.expires) {
		return nil, nil // an unknown version or a stale value is a miss
	}
	return r, nil
}

func (c *Cache) setL2(ctx context.Context, key Key, val []byte, ttl time.Duration) {
	if c.rdb == nil {
		return
	}
	if !c.redisReady() {
		c.m.stores.WithLabelValues(string(LayerL2), resultSkipped).Inc()
		return
	}
	rctx, cancel := context.WithTimeout(ctx, c.opts.RedisTimeout)
	defer cancel()
	if err := c.rdb.Set(rctx, c.redisKey(key), val, ttl).Err(); err != nil {
		c.m.stores.WithLabelValues(string(LayerL2), resultError).Inc()
		c.redisFailed(ctx, err)
		return
	}
	c.redisWorked()
	c.m.stores.WithLabelValues(string(LayerL2), resultOK).Inc()
}

// redisReady reports whether Redis should be asked.
func (c *Cache) redisReady() bool { return c.rdb != nil && c.redisUp.Load() }

// redisWorked records a successful Redis call.
func (c *Cache) redisWorked() {
	if c.redisUp.CompareAndSwap(false, true) {
		c.m.redisUp.Set(1)
		c.log.Info("redis reachable again; cache uses it")
	}
}

// redisFailed records a failed Redis call made under the caller's ctx. The first failure of an outage logs one warning,
// marks Redis down, so that requests stop paying its timeout, and starts the probe. A call
// that failed because the caller's context ended says nothing about Redis.
func (c *Cache) redisFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	if !c.redisUp.CompareAndSwap(true, false) {
		return
	}
	c.m.redisUp.Set(0)
	c.log.Warn("redis unavailable; cache serves from memory only", "err", err)
	c.startProbe()
}

// startProbe pings Redis every ProbeInterval until it answers or the cache closes.
func (c *Cache) startProbe() {
	if !c.probing.CompareAndSwap(false, true) {
		return
	}
	c.wg.Go(func() {
		defer c.probing.Store(false)
		t := time.NewTicker(c.opts.ProbeInterval)
		defer t.Stop()
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(c.ctx, max(c.opts.RedisTimeout, 100*time.Millisecond))
			err := c.rdb.Ping(ctx).Err()
			cancel()
			if err == nil {
				c.redisWorked()
				return
			}
		}
	})
}

// RedisUp reports whether the cache currently uses Redis.
func (c *Cache) RedisUp() bool { return c.redisReady() }

// Metrics returns the cache's metrics, for [Metrics.RecordSaved].
func (c *Cache) Metrics() *Metrics { return c.m }

// slogOtter passes the memory cache library's own warnings to the cache's logger.
type slogOtter struct{ log *slog.Logger }

func (l slogOtter) Warn(ctx context.Context, msg string, err error) {
	l.log.WarnContext(ctx, msg, "err", err)
}

func (l slogOtter) Error(ctx context.Context, msg string, err error) {
	l.log.ErrorContext(ctx, msg, "err", err)
}
