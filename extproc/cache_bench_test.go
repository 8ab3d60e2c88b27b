package extproc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/test/testenv"
)

// BenchmarkCacheHit drives cache hits through a real loopback gRPC connection, as Envoy
// would: request headers, then the buffered body, answered with an immediate response that
// replays a stored answer (JSON or SSE). l1 hits the in-process layer; l2 hits Redis (the
// shared test Redis, see test/testenv) on every request, since the in-process layer is kept
// too small to hold the answer. It reports p50 and p99 of one request's ext_proc round trips,
// requests per second, and the share of hits that came from the wanted layer.
func BenchmarkCacheHit(b *testing.B) {
	answer := `{"id":"c1","object":"chat.completion","created":1700000000,"model":"gpt-4o",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("Gateways route. ", 30) + `"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":250,"completion_tokens":90,"total_tokens":340}}`
	body := `{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},` +
		`{"role":"user","content":"` + strings.Repeat("Tell me about gateways. ", 40) + `"}]}`

	for _, layer := range []cache.Layer{cache.LayerL1, cache.LayerL2} {
		b.Run(string(layer), func(b *testing.B) {
			env := newBenchCacheEnv(b, layer, body, answer)
			for _, mode := range []string{"json", "sse"} {
				req := body
				if mode == "sse" {
					req = strings.Replace(body, `"messages"`, `"stream":true,"messages"`, 1)
				}
				for _, par := range []int{1, 8} {
					b.Run(fmt.Sprintf("%s/par=%d", mode, par), func(b *testing.B) {
						benchHits(b, env, req, layer, par)
					})
				}
			}
		})
	}
}

// newBenchCacheEnv starts a server whose cache holds answer for body.
func newBenchCacheEnv(b *testing.B, layer cache.Layer, body, answer string) *testEnv {
	b.Helper()
	reg := prometheus.NewRegistry()
	opts := cache.Options{Collapse: true, Metrics: cache.NewMetrics(reg)}
	if layer == cache.LayerL2 {
		opts.Redis = testenv.Redis(b)
		opts.RedisTimeout = time.Second
		// Smaller than any answer: every hit is read from Redis.
		opts.L1MaxBytes = 1
	}
	c, err := cache.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	env := newTestEnvOpts(b, slog.LevelInfo, Options{Cache: c, Registerer: reg})

	// One miss stores the answer.
	ctx, cancel := benchContext()
	defer cancel()
	s, err := env.client.Process(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, req := range []*v3procservicepb.ProcessingRequest{
		postHeaders("/v1/chat/completions", len(body)), requestBody(body),
		responseHeaders("200", "application/json"), responseBody(answer, true),
	} {
		if err := s.Send(req); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	return env
}

func benchHits(b *testing.B, env *testEnv, body string, layer cache.Layer, par int) {
	var (
		mu     sync.Mutex
		durs   []time.Duration
		wanted atomic.Int64
	)
	b.SetParallelism(par)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var local []time.Duration
		for pb.Next() {
			t0 := time.Now()
			got, err := benchHit(env, body)
			if err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
			if got == layer {
				wanted.Add(1)
			}
		}
		mu.Lock()
		durs = append(durs, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	reportPercentiles(b, durs)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(wanted.Load())/float64(b.N), "layer-share")
}

// benchHit plays one request that the cache answers and returns the layer of the hit.
func benchHit(env *testEnv, body string) (cache.Layer, error) {
	ctx, cancel := benchContext()
	defer cancel()
	s, err := env.client.Process(ctx)
	if err != nil {
		return "", err
	}
	if err := s.Send(postHeaders("/v1/chat/completions", len(body))); err != nil {
		return "", err
	}
	if _, err := s.Recv(); err != nil {
		return "", err
	}
	if err := s.Send(requestBody(body)); err != nil {
		return "", err
	}
	resp, err := s.Recv()
	if err != nil {
		return "", err
	}
	ir := resp.GetImmediateResponse()
	if ir == nil {
		return "", fmt.Errorf("reply %v, want a cache hit", resp)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("stream end = %v, want EOF", err)
	}
	for _, h := range ir.GetHeaders().GetSetHeaders() {
		if h.GetHeader().GetKey() == headerCacheLayer {
			return cache.Layer(h.GetHeader().GetRawValue()), nil
		}
	}
	return "", nil
}
