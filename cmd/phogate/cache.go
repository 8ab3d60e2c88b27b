package main

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/internal/config"
)

// newCache builds the exact response cache of cfg: memory always, and rdb (from newRedis;
// nil when redis.url is unset) as the second layer. It returns nil when the cache is off.
// The returned function stops the cache; call it after the servers have stopped and before
// rdb is closed. The cache's metrics are registered on reg here, once.
func newCache(cfg *config.Config, logger *slog.Logger, reg prometheus.Registerer,
	rdb *redis.Client) (*cache.Cache, func(), error) {
	// The cache adds its own component attribute to opts.Logger.
	clog := logger.With("component", "cache")
	if !cfg.Cache.IsEnabled() {
		clog.Info("cache: off (cache.enabled is false)")
		return nil, func() {}, nil
	}
	opts := cache.OptionsFromConfig(cfg)
	opts.Logger = logger
	opts.Metrics = cache.NewMetrics(reg, modelNames(cfg)...)

	if rdb != nil {
		opts.Redis = rdb
		clog.Info("cache: in-process and redis", "redis", rdb.Options().Addr,
			"redis_db", rdb.Options().DB)
	} else {
		clog.Info("cache: in-process only (no redis.url)")
	}
	c, err := cache.New(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("creating cache: %w", err)
	}
	return c, c.Close, nil
}

// newRedis returns a client for redis.url, or nil when none is set. Every call is bounded by
// redis.timeout: the socket timeouts, and the caller's context deadline, which the client
// honours (ContextTimeoutEnabled).
func newRedis(cfg *config.Config) (*redis.Client, error) {
	if cfg.Redis.URL == "" {
		return nil, nil
	}
	opts, err := redis.ParseURL(cfg.Redis.URL)
	if err != nil {
		// The error may quote the URL, which can hold a password.
		return nil, fmt.Errorf("redis.url is not a valid Redis URL")
	}
	if t := cfg.Redis.Timeout.Duration; t > 0 {
		opts.ReadTimeout = t
		opts.WriteTimeout = t
	}
	opts.ContextTimeoutEnabled = true
	return redis.NewClient(opts), nil
}

// modelNames are the configured model names, the values of the cache's "model" label.
func modelNames(cfg *config.Config) []string {
	names := make([]string, 0, len(cfg.Models))
	for _, m := range cfg.Models {
		names = append(names, m.Name)
	}
	return names
}
