package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/extproc"
	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/routing"
	"github.com/phochat/phogate/xds"
)

// run starts the ext_proc server, the xDS server and the admin server, and serves until ctx
// is cancelled; then it stops them gracefully within the configured shutdown timeout.
func run(ctx context.Context, path string, logger *slog.Logger) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if err := cfg.ResolveSecrets(os.Getenv); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	xdsGRPC, xdsSrv, err := newXDS(ctx, cfg, logger, reg)
	if err != nil {
		return err
	}
	// Latency-weighted balancing (balancing.go): observations from ext_proc feed the
	// endpoint statistics, which drive the published weights.
	// The model router reads the same latency statistics (ledger.go).
	latency := routing.NewLatencyStats(cfg.Balancing.HalfLife.Duration, nil)
	bal, err := newBalancing(cfg, logger, reg, xdsSrv, latency)
	if err != nil {
		return err
	}
	// One Redis client (redis.url) shared by the caches, closed after them.
	rdb, err := newRedis(cfg)
	if err != nil {
		return err
	}
	if rdb != nil {
		defer rdb.Close()
	}
	// The exact response cache (cache.go), closed once the servers have stopped.
	respCache, closeCache, err := newCache(cfg, logger, reg, rdb)
	if err != nil {
		return err
	}
	defer closeCache()
	// The semantic cache after it (semantic.go), closed first.
	sem, closeSemantic, err := newSemantic(ctx, cfg, logger, reg, rdb)
	if err != nil {
		return err
	}
	defer closeSemantic()
	// The ledger and the model router (ledger.go); the ledger is flushed once the servers
	// have stopped, before the Redis client closes.
	acct, closeLedger, err := newAccounting(ctx, cfg, logger, reg, rdb, latency)
	if err != nil {
		return err
	}
	defer closeLedger()
	extGRPC, err := newExtProc(cfg, logger, reg, bal, respCache, sem, acct)
	if err != nil {
		return err
	}
	admin := &http.Server{
		Handler:           adminMux(reg),
		ReadHeaderTimeout: 5 * time.Second,
	}

	listeners, err := listenAll(cfg)
	if err != nil {
		return err
	}
	logger.Info("phogate started",
		"ext_proc", listeners.extProc.Addr().String(),
		"xds", listeners.xds.Addr().String(),
		"admin", listeners.admin.Addr().String(),
		"providers", len(cfg.Providers), "models", len(cfg.Models))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveGRPC(extGRPC, listeners.extProc, "ext_proc") })
	g.Go(func() error { return serveGRPC(xdsGRPC, listeners.xds, "xds") })
	g.Go(func() error { return bal.run(gctx) })
	g.Go(func() error {
		if err := admin.Serve(listeners.admin); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		logger.Info("shutting down", "timeout", cfg.Gateway.ShutdownTimeout.Duration)
		shutdown(cfg.Gateway.ShutdownTimeout.Duration, admin, extGRPC, xdsGRPC)
		return nil
	})
	err = g.Wait()
	logger.Info("phogate stopped")
	return err
}

func newXDS(ctx context.Context, cfg *config.Config, logger *slog.Logger,
	reg prometheus.Registerer) (*grpc.Server, *xds.Server, error) {
	res, err := xds.Build(cfg, xds.BuildOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("building Envoy resources: %w", err)
	}
	srv := xds.NewServer(xds.ServerOptions{Logger: logger, Registerer: reg})
	if err := srv.Publish(ctx, res); err != nil {
		return nil, nil, fmt.Errorf("publishing Envoy resources: %w", err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	return g, srv, nil
}

func newExtProc(cfg *config.Config, logger *slog.Logger,
	reg prometheus.Registerer, bal *balancing, respCache *cache.Cache,
	sem extproc.SemanticOptions, acct *accounting) (*grpc.Server, error) {
	ep, err := extproc.New(extproc.Options{Config: cfg, Logger: logger, Registerer: reg,
		Observer: bal.observer, Cache: respCache, Semantic: sem,
		Ledger: acct.ledger, Router: acct.router})
	if err != nil {
		return nil, fmt.Errorf("ext_proc server: %w", err)
	}
	g := grpc.NewServer(extproc.GRPCServerOptions(cfg)...)
	ep.Register(g)
	return g, nil
}

func adminMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return mux
}

type listenerSet struct{ extProc, xds, admin net.Listener }

func listenAll(cfg *config.Config) (*listenerSet, error) {
	var ls listenerSet
	var err error
	addrs := []struct {
		dst  *net.Listener
		addr string
		name string
	}{
		{&ls.extProc, cfg.Gateway.ExtProcAddress, "ext_proc"},
		{&ls.xds, cfg.Gateway.XDSAddress, "xds"},
		{&ls.admin, cfg.Gateway.AdminAddress, "admin"},
	}
	for i, a := range addrs {
		if *a.dst, err = net.Listen("tcp", a.addr); err != nil {
			for _, prev := range addrs[:i] {
				(*prev.dst).Close()
			}
			return nil, fmt.Errorf("%s listener: %w", a.name, err)
		}
	}
	return &ls, nil
}

func serveGRPC(g *grpc.Server, lis net.Listener, name string) error {
	if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("%s server: %w", name, err)
	}
	return nil
}

// shutdown lets in-flight requests finish: streams that are still open when the timeout
// passes are cut.
func shutdown(timeout time.Duration, admin *http.Server, servers ...*grpc.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		for _, s := range servers {
			s.GracefulStop()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		for _, s := range servers {
			s.Stop()
		}
	}
	admin.Shutdown(ctx) //nolint:errcheck // best effort at exit
}
