package extproc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/metadata"

	"github.com/phochat/phogate/internal/routeheaders"
)

// BenchmarkRequestPath drives whole requests through a real loopback gRPC connection, as Envoy
// would: request headers, buffered body, response headers and the response body, either one
// buffered JSON answer or about 20 pipelined SSE chunks. It reports the p50 and p99 of the
// time one request spends in ext_proc round trips. par is the RunParallel multiplier: par ×
// GOMAXPROCS goroutines each drive requests one after another.
func BenchmarkRequestPath(b *testing.B) {
	env := newTestEnvLevel(b, slog.LevelInfo)
	body := `{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},` +
		`{"role":"user","content":"` + strings.Repeat("Tell me about gateways. ", 40) + `"}]}`
	jsonAnswer := `{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":` +
		`{"role":"assistant","content":"` + strings.Repeat("Gateways route. ", 30) + `"}}],` +
		`"usage":{"prompt_tokens":250,"completion_tokens":90,"total_tokens":340}}`
	var sse []string
	for i := range 19 {
		sse = append(sse, fmt.Sprintf(`data: {"id":"c1","object":"chat.completion.chunk",`+
			`"choices":[{"index":0,"delta":{"content":"token %d "}}]}`+"\n\n", i))
	}
	sse = append(sse, `data: {"id":"c1","object":"chat.completion.chunk","choices":[],`+
		`"usage":{"prompt_tokens":250,"completion_tokens":19,"total_tokens":269}}`+"\n\ndata: [DONE]\n\n")

	for _, mode := range []string{"json", "sse"} {
		for _, par := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/par=%d", mode, par), func(b *testing.B) {
				var (
					mu   sync.Mutex
					durs []time.Duration
				)
				b.SetParallelism(par)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var local []time.Duration
					for pb.Next() {
						start := time.Now()
						if err := benchOne(env, body, mode, jsonAnswer, sse); err != nil {
							b.Error(err)
							return
						}
						local = append(local, time.Since(start))
					}
					mu.Lock()
					durs = append(durs, local...)
					mu.Unlock()
				})
				b.StopTimer()
				reportPercentiles(b, durs)
			})
		}
	}
}

func reportPercentiles(b *testing.B, durs []time.Duration) {
	if len(durs) == 0 {
		return
	}
	slices.Sort(durs)
	at := func(q float64) float64 {
		return float64(durs[min(len(durs)-1, int(q*float64(len(durs))))].Microseconds())
	}
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// benchOne plays one request through its own stream.
func benchOne(env *testEnv, body, mode, jsonAnswer string, sse []string) error {
	ctx, cancel := benchContext()
	defer cancel()
	s, err := env.client.Process(ctx)
	if err != nil {
		return err
	}
	rt := func(req *v3procservicepb.ProcessingRequest) error {
		if err := s.Send(req); err != nil {
			return err
		}
		_, err := s.Recv()
		return err
	}
	contentType := "application/json"
	if mode == "sse" {
		contentType = "text/event-stream"
		body = strings.Replace(body, `"messages"`, `"stream":true,"messages"`, 1)
	}
	for _, req := range []*v3procservicepb.ProcessingRequest{
		postHeaders("/v1/chat/completions", len(body)), requestBody(body),
		responseHeaders("200", contentType),
	} {
		if err := rt(req); err != nil {
			return err
		}
	}
	if mode == "json" {
		if err := rt(responseBody(jsonAnswer, true)); err != nil {
			return err
		}
	} else {
		for i, c := range sse {
			if err := s.Send(responseBody(c, i == len(sse)-1)); err != nil {
				return err
			}
		}
		for range sse {
			if _, err := s.Recv(); err != nil {
				return err
			}
		}
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("stream end = %v, want EOF", err)
	}
	return nil
}

// BenchmarkUpstreamAttempt drives the stream of one upstream attempt, as the model
// cluster's filter does for every try: request headers, the buffered body (the provider
// renames the model) and the response headers. It reports the p50 and p99 of one attempt's
// ext_proc round trips, which come on top of BenchmarkRequestPath for every request that
// goes upstream.
func BenchmarkUpstreamAttempt(b *testing.B) {
	env := newTestEnvLevel(b, slog.LevelInfo)
	body := `{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},` +
		`{"role":"user","content":"` + strings.Repeat("Tell me about gateways. ", 40) + `"}]}`
	var durs []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := benchAttempt(env, body); err != nil {
			b.Fatal(err)
		}
		durs = append(durs, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, durs)
}

func benchAttempt(env *testEnv, body string) error {
	ctx, cancel := benchContext()
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, routeheaders.FilterPhase, routeheaders.PhaseUpstream)
	st, err := env.client.Process(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = st.CloseSend() }()
	for _, req := range []*v3procservicepb.ProcessingRequest{
		attemptHeaders("azure", "gpt-4o", len(body)), requestBody(body),
		responseHeaders("200", "application/json"),
	} {
		if err := st.Send(req); err != nil {
			return err
		}
		if _, err := st.Recv(); err != nil {
			return err
		}
	}
	return nil
}
