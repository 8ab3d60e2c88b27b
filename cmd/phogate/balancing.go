package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/phochat/phogate/extproc"
	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/routing"
	"github.com/phochat/phogate/xds"
)

// balancing is the wiring of latency-weighted balancing: endpoint statistics fed by the
// ext_proc server (directly, or through Redis when redis.url is set) and the balancer that
// publishes weights.
type balancing struct {
	stats    *routing.EndpointStats
	observer extproc.Observer
	balancer *xds.Balancer
	redisObs *xds.RedisObservations
	rdb      *redis.Client
	halfLife time.Duration
}

// newBalancing builds the balancing parts; with balancing disabled it returns an empty
// value whose observer is nil and whose run returns at once.
func newBalancing(cfg *config.Config, logger *slog.Logger, reg prometheus.Registerer,
	srv *xds.Server, latency *routing.LatencyStats,
) (*balancing, error) {
	b := cfg.Balancing
	if !b.Enabled {
		return &balancing{}, nil
	}
	stats := routing.NewEndpointStats(routing.EndpointStatsOptions{
		HalfLife:         b.HalfLife.Duration,
		FailureThreshold: b.FailureThreshold,
		Latency:          latency,
	})
	bal := &balancing{
		stats:    stats,
		observer: stats,
		halfLife: b.HalfLife.Duration,
	}
	var store xds.WeightStore
	if cfg.Redis.URL != "" {
		opt, err := redis.ParseURL(cfg.Redis.URL)
		if err != nil {
			return nil, fmt.Errorf("balancing: redis.url: %w", err)
		}
		bal.rdb = redis.NewClient(opt)
		bal.redisObs = xds.NewRedisObservations(bal.rdb, cfg.Redis.Timeout.Duration, logger)
		bal.observer = bal.redisObs
		store = xds.NewRedisWeightStore(bal.rdb, cfg.Redis.Timeout.Duration)
	}
	var err error
	bal.balancer, err = xds.NewBalancer(xds.BalancerOptions{
		Config: cfg, Server: srv, Stats: stats, Store: store, Logger: logger, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	return bal, nil
}

// run runs the balancer, and the Redis publisher and follower when configured, until ctx
// ends.
func (b *balancing) run(ctx context.Context) error {
	if b.balancer == nil {
		return nil
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.balancer.Run(ctx) })
	if b.redisObs != nil {
		g.Go(func() error { return b.redisObs.Publish(ctx) })
		g.Go(func() error {
			return b.redisObs.Follow(ctx, b.stats, b.halfLife)
		})
	}
	err := g.Wait()
	if b.rdb != nil {
		b.rdb.Close()
	}
	return err
}
