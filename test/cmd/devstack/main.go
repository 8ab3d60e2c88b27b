// Command devstack runs the demo stack behind `make run`: a fake model provider on every
// loopback endpoint named in the configuration, the phogate binary, and Envoy when an envoy
// binary is on PATH or the Envoy stand-in otherwise, all configured from the same file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/test/fakeprovider"
	"github.com/phochat/phogate/test/standin"
)

func main() {
	configPath := flag.String("config", "envoy/phogate.yaml", "gateway configuration `file`")
	phogate := flag.String("phogate", "bin/phogate", "path of the phogate `binary`")
	bootstrap := flag.String("bootstrap", "envoy/bootstrap.yaml", "Envoy bootstrap used with a real envoy")
	proxy := flag.String("proxy", "auto", "auto (envoy when on PATH), envoy or standin")
	flag.Parse()

	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := base.With("component", "devstack")
	if err := run(ctx, base, *configPath, *phogate, *bootstrap, *proxy); err != nil {
		logger.Error("devstack failed", "err", err)
		os.Exit(1)
	}
}

// run starts the stack and serves until ctx is done. base is the logger without a component;
// each part adds its own.
func run(ctx context.Context, base *slog.Logger, path, phogate, bootstrap, proxy string) error {
	logger := base.With("component", "devstack")
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if err := startFakeProviders(ctx, base, cfg); err != nil {
		return err
	}

	gw := exec.CommandContext(ctx, phogate, "serve", "-config", path)
	gw.Stdout, gw.Stderr = os.Stdout, os.Stderr
	gw.Cancel = func() error { return gw.Process.Signal(os.Interrupt) }
	gw.WaitDelay = cfg.Gateway.ShutdownTimeout.Duration + time.Second
	if err := gw.Start(); err != nil {
		return fmt.Errorf("starting phogate: %w", err)
	}
	if err := waitHealthy(ctx, "http://"+cfg.Gateway.AdminAddress+"/healthz"); err != nil {
		return err
	}

	stopProxy, err := startProxy(ctx, base, cfg, bootstrap, proxy)
	if err != nil {
		return err
	}
	defer stopProxy()
	addr := net.JoinHostPort(cfg.Listener.Address, fmt.Sprint(cfg.Listener.Port))
	logger.Info("demo stack ready", "openai_base_url", "http://"+addr+"/v1",
		"metrics", "http://"+cfg.Gateway.AdminAddress+"/metrics")

	err = gw.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("phogate exited: %w", err)
}

// startFakeProviders serves a fake provider on every loopback endpoint of the configuration,
// each named after its provider and address so answers show who served them.
func startFakeProviders(ctx context.Context, base *slog.Logger, cfg *config.Config) error {
	logger := base.With("component", "devstack")
	for _, p := range cfg.Providers {
		for _, e := range p.Endpoints {
			host, _, err := config.SplitHostPort(e.Address)
			if err != nil {
				return err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				continue
			}
			name := p.Name + "@" + e.Address
			srv := fakeprovider.New(fakeprovider.Options{Name: name, Logger: base})
			if _, err := fakeprovider.Listen(ctx, e.Address, srv); err != nil {
				return fmt.Errorf("fake provider %s: %w", name, err)
			}
			logger.Info("fake provider listening", "provider", p.Name, "address", e.Address)
		}
	}
	return nil
}

// startProxy starts Envoy or the stand-in and returns a function that stops it.
func startProxy(ctx context.Context, base *slog.Logger, cfg *config.Config, bootstrap,
	proxy string) (func(), error) {
	logger := base.With("component", "devstack")
	envoyPath, lookErr := exec.LookPath("envoy")
	if proxy == "envoy" || (proxy == "auto" && lookErr == nil) {
		if lookErr != nil {
			return nil, fmt.Errorf("-proxy envoy: %w", lookErr)
		}
		cmd := exec.CommandContext(ctx, envoyPath, "-c", bootstrap, "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting envoy: %w", err)
		}
		logger.Info("envoy started", "bootstrap", bootstrap)
		return func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }, nil //nolint:errcheck
	}
	if proxy != "auto" && proxy != "standin" {
		return nil, fmt.Errorf("-proxy %q: want auto, envoy or standin", proxy)
	}
	p, err := standin.Start(ctx, standin.Options{
		XDSAddress: cfg.Gateway.XDSAddress, NodeID: "phogate-demo", Cluster: "phogate",
		Logger: base,
	})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitReady(wctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("envoy stand-in not ready: %w", err)
	}
	logger.Info("no envoy binary on PATH: the Envoy stand-in serves the listener")
	return func() { p.Close() }, nil
}

func waitHealthy(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("phogate did not become healthy within 30s")
		case <-tick.C:
		}
	}
}
