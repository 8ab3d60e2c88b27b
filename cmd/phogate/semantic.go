package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/phochat/phogate/cache/semantic"
	"github.com/phochat/phogate/extproc"
	"github.com/phochat/phogate/internal/config"
)

// newSemantic builds the semantic cache of cfg, sharing rdb (nil: this process only) with
// the exact cache, and registers its metrics on reg. It returns empty options when the
// semantic cache is off. ctx bounds loading the entries already in Redis. The returned
// function stops following Redis and the embedder; call it before rdb is closed.
func newSemantic(ctx context.Context, cfg *config.Config, logger *slog.Logger,
	reg prometheus.Registerer, rdb *redis.Client) (extproc.SemanticOptions, func(), error) {
	sl := logger.With("component", "semantic_cache")
	sc := &cfg.Cache.Semantic
	if !cfg.Cache.SemanticEnabled() {
		sl.Info("semantic cache: off (cache.semantic.enabled is false, or the cache is off)")
		return extproc.SemanticOptions{}, func() {}, nil
	}
	metrics := semantic.NewMetrics(reg)
	emb, closeEmb, err := newEmbedder(sc, logger, metrics)
	if err != nil {
		return extproc.SemanticOptions{}, nil, err
	}
	scfg := semantic.Config{
		Embedder:     emb,
		TTL:          sc.TTL.Duration,
		MaxEntries:   sc.MaxEntries,
		Threshold:    sc.Threshold,
		DisableGuard: !sc.GuardEnabled(),
		Logger:       logger,
		Metrics:      metrics,
	}
	if rdb != nil {
		// A nil *redis.Client in the interface would not be nil.
		scfg.Redis, scfg.RedisTimeout = rdb, cfg.Redis.Timeout.Duration
	}
	ix, err := semantic.New(ctx, scfg)
	if err != nil {
		closeEmb()
		return extproc.SemanticOptions{}, nil, fmt.Errorf("creating semantic cache: %w", err)
	}
	sl.Info("semantic cache: on", "embedder", emb.Name(), "threshold", sc.Threshold,
		"guard", sc.GuardEnabled(), "shared_through_redis", rdb != nil, "entries", ix.Len())
	closeAll := func() {
		ix.Close()
		closeEmb()
	}
	opts := extproc.SemanticOptions{Index: ix, Metrics: metrics, Threshold: sc.ThresholdFor}
	return opts, closeAll, nil
}

// newEmbedder returns the configured embedder and a function that stops it.
func newEmbedder(sc *config.CacheSemantic, logger *slog.Logger,
	metrics *semantic.Metrics) (semantic.Embedder, func(), error) {
	if sc.Embedder != config.SemanticEmbedderHTTP {
		h, err := semantic.NewHashEmbedder(0)
		if err != nil {
			return nil, nil, fmt.Errorf("semantic cache embedder: %w", err)
		}
		return h, func() {}, nil
	}
	h := sc.HTTP
	var key string
	if h.APIKeyEnv != "" {
		if key = os.Getenv(h.APIKeyEnv); key == "" {
			return nil, nil, fmt.Errorf("cache.semantic.http.api_key_env: environment "+
				"variable %s is not set", h.APIKeyEnv)
		}
	}
	e, err := semantic.NewHTTPEmbedder(semantic.HTTPEmbedderConfig{
		BaseURL:    h.BaseURL,
		Model:      h.Model,
		APIKey:     key,
		Dimensions: h.Dimensions,
		Timeout:    h.Timeout.Duration,
		Window:     h.BatchWindow.Duration,
		Logger:     logger,
		Metrics:    metrics,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("semantic cache embedder: %w", err)
	}
	return e, func() { e.Close() }, nil
}
