package xds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/phochat/phogate/routing"
)

// Redis names shared by every replica; see config.Balancing.
const (
	// ObservationStream is the Redis stream of observations from every ext_proc replica.
	ObservationStream = "phogate:obs"
	// WeightKey holds the latest [WeightStep] as JSON.
	WeightKey = "phogate:balancer:weights"
)

const (
	// obsStreamMaxLen bounds the stream (approximately, MAXLEN ~): at 1,000 requests a
	// second it holds the last 100 s, well beyond what the averages still weigh.
	obsStreamMaxLen = 100_000
	// obsBuffer is how many observations wait for Redis before new ones are dropped; the
	// request path never waits for Redis.
	obsBuffer = 4096
	// obsBatch is the most observations sent in one pipeline.
	obsBatch = 256
	// obsReadBlock is how long one XREAD waits for new entries.
	obsReadBlock = time.Second
	// obsReplay is how far back, in half-lives, a starting follower reads the stream, so
	// that a new control plane starts with the statistics the others have.
	obsReplay = 5
)

// RedisObservations carries observations between replicas through the Redis stream
// [ObservationStream]. The ext_proc side calls [RedisObservations.Observe] (it implements
// extproc's Observer) and runs [RedisObservations.Publish]; the control-plane side runs
// [RedisObservations.Follow]. Its methods are safe for concurrent use.
type RedisObservations struct {
	rdb     *redis.Client
	timeout time.Duration
	log     *slog.Logger
	queue   chan routing.Observation
	stream  string // ObservationStream; tests use their own
}

// NewRedisObservations returns a carrier over rdb; timeout bounds each Redis call.
func NewRedisObservations(rdb *redis.Client, timeout time.Duration, log *slog.Logger,
) *RedisObservations {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RedisObservations{
		rdb: rdb, timeout: timeout, log: log.With("component", "balancer"),
		queue: make(chan routing.Observation, obsBuffer), stream: ObservationStream,
	}
}

// Observe queues o for [RedisObservations.Publish]. It never blocks: when the queue is
// full the observation is dropped.
func (r *RedisObservations) Observe(o routing.Observation) {
	select {
	case r.queue <- o:
	default:
	}
}

// Publish appends queued observations to the stream until ctx ends. Failed batches are
// dropped: observations are samples, and the averages do without a few.
func (r *RedisObservations) Publish(ctx context.Context) error {
	failing := false
	for {
		var batch []routing.Observation
		select {
		case <-ctx.Done():
			return nil
		case o := <-r.queue:
			batch = append(batch, o)
		}
	fill:
		for len(batch) < obsBatch {
			select {
			case o := <-r.queue:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		err := r.append(ctx, batch)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			failing = true
			r.log.Warn("publishing observations to redis", "err", err)
		case err == nil && failing:
			failing = false
			r.log.Info("publishing observations to redis resumed")
		}
	}
}

func (r *RedisObservations) append(ctx context.Context, batch []routing.Observation) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	pipe := r.rdb.Pipeline()
	for _, o := range batch {
		// The entry ID's time stands for At, so every reader uses the same clock.
		o.At = time.Time{}
		b, err := json.Marshal(o)
		if err != nil {
			return fmt.Errorf("encoding observation: %w", err)
		}
		pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: r.stream, MaxLen: obsStreamMaxLen, Approx: true,
			Values: []any{"o", b},
		})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("appending to %s: %w", r.stream, err)
	}
	return nil
}

// Follow reads the stream into stats until ctx ends, in stream order, starting obsReplay
// half-lives back. Each observation's time is its entry ID's time. Redis failures are
// retried after a short pause.
func (r *RedisObservations) Follow(ctx context.Context, stats *routing.EndpointStats,
	halfLife time.Duration,
) error {
	last := fmt.Sprintf("%d-0", time.Now().Add(-obsReplay*halfLife).UnixMilli())
	failing := false
	for ctx.Err() == nil {
		next, err := r.read(ctx, stats, last)
		if err == nil {
			last = next
			if failing {
				failing = false
				r.log.Info("reading observations from redis resumed")
			}
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if !failing {
			failing = true
			r.log.Warn("reading observations from redis", "err", err)
		}
		t := time.NewTimer(obsReadBlock)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// read folds one batch read after the entry ID last and returns the last ID read.
func (r *RedisObservations) read(ctx context.Context, stats *routing.EndpointStats,
	last string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, obsReadBlock+r.timeout)
	defer cancel()
	res, err := r.rdb.XRead(ctx, &redis.XReadArgs{
		Streams: []string{r.stream, last}, Count: 1000, Block: obsReadBlock,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return last, nil
	}
	if err != nil {
		return last, fmt.Errorf("reading %s: %w", r.stream, err)
	}
	for _, s := range res {
		for _, m := range s.Messages {
			last = m.ID
			o, ok := decodeObservation(m)
			if ok {
				stats.Observe(o)
			}
		}
	}
	return last, nil
}

// decodeObservation reads one stream entry; a malformed entry is skipped.
func decodeObservation(m redis.XMessage) (routing.Observation, bool) {
	var o routing.Observation
	s, ok := m.Values["o"].(string)
	if !ok || json.Unmarshal([]byte(s), &o) != nil {
		return o, false
	}
	ms, _, _ := strings.Cut(m.ID, "-")
	if n, err := strconv.ParseInt(ms, 10, 64); err == nil {
		o.At = time.UnixMilli(n)
	}
	return o, true
}

// RedisWeightStore is a [WeightStore] in the Redis key [WeightKey].
type RedisWeightStore struct {
	rdb     *redis.Client
	timeout time.Duration
	key     string // WeightKey; tests use their own
}

// NewRedisWeightStore returns a store over rdb; timeout bounds each Redis call.
func NewRedisWeightStore(rdb *redis.Client, timeout time.Duration) *RedisWeightStore {
	return &RedisWeightStore{rdb: rdb, timeout: timeout, key: WeightKey}
}

var _ WeightStore = (*RedisWeightStore)(nil)

// commitScript sets KEYS[1] to ARGV[2] unless it holds a step whose epoch is at least
// ARGV[1], and returns the value it holds afterwards. The epoch is kept in a second key so
// that the script need not decode JSON.
var commitScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[2]) or '-1')
if cur < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1])
end
return redis.call('GET', KEYS[1])
`)

// Load implements [WeightStore].
func (s *RedisWeightStore) Load(ctx context.Context) (WeightStep, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	b, err := s.rdb.Get(ctx, s.key).Bytes()
	if errors.Is(err, redis.Nil) {
		return WeightStep{}, nil
	}
	if err != nil {
		return WeightStep{}, fmt.Errorf("loading %s: %w", s.key, err)
	}
	return decodeStep(b)
}

// Commit implements [WeightStore].
func (s *RedisWeightStore) Commit(ctx context.Context, step WeightStep) (WeightStep, error) {
	b, err := json.Marshal(step)
	if err != nil {
		return WeightStep{}, fmt.Errorf("encoding weights: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	got, err := commitScript.Run(ctx, s.rdb, []string{s.key, s.key + ":epoch"},
		step.Epoch, b).Text()
	if err != nil {
		return WeightStep{}, fmt.Errorf("committing %s: %w", s.key, err)
	}
	return decodeStep([]byte(got))
}

func decodeStep(b []byte) (WeightStep, error) {
	var s WeightStep
	if err := json.Unmarshal(b, &s); err != nil {
		return WeightStep{}, fmt.Errorf("decoding %s: %w", WeightKey, err)
	}
	return s, nil
}
