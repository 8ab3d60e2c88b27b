// Command fakeprovider runs the deterministic fake OpenAI-compatible provider for the demo
// stack and for load tests. Its behavior can be changed at runtime with POST /fake/behavior.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/phochat/phogate/test/fakeprovider"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fakeprovider:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr    = flag.String("addr", "127.0.0.1:8090", "listen address")
		name    = flag.String("name", "fake", "provider name (x-fake-provider, system_fingerprint)")
		verbose = flag.Bool("v", false, "log every request at debug level")
		b       fakeprovider.Behavior
	)
	flag.DurationVar(&b.TTFT, "ttft", 0, "delay before the first byte")
	flag.Float64Var(&b.TokensPerSecond, "tps", 0, "generated words per second (0 = instant)")
	flag.Float64Var(&b.ErrorRate, "error-rate", 0, "fraction of calls answered 500")
	flag.Float64Var(&b.RateLimitRate, "rate-limit-rate", 0, "fraction of calls answered 429")
	flag.BoolVar(&b.OmitUsage, "omit-usage", false, "never report usage")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := fakeprovider.New(fakeprovider.Options{Name: *name, Behavior: b, Logger: logger})
	r, err := fakeprovider.Listen(ctx, *addr, s)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return r.Close()
}
