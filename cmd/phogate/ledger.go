package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/ledger"
	"github.com/phochat/phogate/routing"
)

// accounting is the request path's accounting: the ledger (identity, rate limits, budgets,
// usage rows) and the model router.
type accounting struct {
	ledger *ledger.Ledger
	router *routing.Router
}

// newAccounting opens the ledger of cfg — PostgreSQL at ledger.dsn, or else the embedded
// SQLite file — with rdb (nil without redis.url) arbitrating budgets and rate limits, and
// builds the model router over latency. The ledger's metrics are registered on reg here,
// once. The returned function flushes queued usage rows and closes the store; call it after
// the servers have stopped and before rdb is closed. ctx bounds the start-up.
func newAccounting(ctx context.Context, cfg *config.Config, logger *slog.Logger,
	reg prometheus.Registerer, rdb *redis.Client, latency *routing.LatencyStats,
) (*accounting, func(), error) {
	router, err := routing.NewRouter(cfg, latency)
	if err != nil {
		return nil, nil, fmt.Errorf("model router: %w", err)
	}
	llog := logger.With("component", "ledger")
	if cfg.Ledger.DSN == "" {
		llog.Info(fmt.Sprintf("ledger: embedded SQLite at %s (no ledger.dsn)",
			cfg.Ledger.EmbeddedPath))
	}
	opts := ledger.Options{Config: cfg, Registerer: reg, Logger: logger}
	if rdb != nil {
		// A nil *redis.Client in the interface would not read as "no Redis".
		opts.Redis = rdb
	}
	l, err := ledger.New(ctx, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("ledger: %w", err)
	}
	closeLedger := func() {
		// Flushing may wait for a store that is down; the rows stay in the spool then.
		ctx, cancel := context.WithTimeout(context.Background(),
			max(cfg.Gateway.ShutdownTimeout.Duration, 5*time.Second))
		defer cancel()
		if err := l.Close(ctx); err != nil {
			llog.Warn("closing ledger; unsent usage rows stay in the spool", "err", err)
		}
	}
	return &accounting{ledger: l, router: router}, closeLedger, nil
}
