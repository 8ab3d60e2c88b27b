package extproc

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/internal/routeheaders"
)

const defaultTestTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testConfig = `
providers:
  - name: openai
    base_url: http://127.0.0.1:1/v1
    api_key_env: TEST_OPENAI_KEY
    models: [gpt-4o-mini, text-embedding-3-small]
  - name: azure
    base_url: http://127.0.0.1:2/openai/v1
    api_key_env: TEST_AZURE_KEY
    auth_header: api-key
    models:
      - name: gpt-4o
        upstream_name: gpt-4o-2024-08-06
  - name: local
    base_url: http://127.0.0.1:3/v1
    models:
      - name: llama
        upstream_name: llama-3.1-8b
models:
  - name: gpt-4o-mini
    price: {input: 0.15, output: 0.60}
  - name: gpt-4o
  - name: llama
  - name: text-embedding-3-small
    kind: embedding
ext_proc:
  max_body_bytes: 4096
`

const (
	testOpenAIKey = "sk-openai-secret"
	testAzureKey  = "azure-secret"
)

func testConfigParsed(t testing.TB) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatalf("config.Parse() = %v", err)
	}
	keys := map[string]string{"TEST_OPENAI_KEY": testOpenAIKey, "TEST_AZURE_KEY": testAzureKey}
	if err := cfg.ResolveSecrets(func(k string) string { return keys[k] }); err != nil {
		t.Fatalf("ResolveSecrets() = %v", err)
	}
	return cfg
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testEnv is a server on a loopback gRPC listener and a client connected to it.
type testEnv struct {
	srv    *Server
	g      *grpc.Server
	reg    *prometheus.Registry
	logs   *syncBuffer
	client v3procservicepb.ExternalProcessorClient
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	return newTestEnvLevel(t, slog.LevelDebug)
}

// newTestEnvLevel starts a server logging at level.
func newTestEnvLevel(t testing.TB, level slog.Level) *testEnv {
	t.Helper()
	return newTestEnvOpts(t, level, Options{})
}

// newTestEnvOpts starts a server with opts, completed with the test config, a logger at
// level and a fresh registry unless opts sets them.
func newTestEnvOpts(t testing.TB, level slog.Level, opts Options) *testEnv {
	t.Helper()
	if opts.Config == nil {
		opts.Config = testConfigParsed(t)
	}
	cfg := opts.Config
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}))
	reg, ok := opts.Registerer.(*prometheus.Registry)
	if !ok {
		reg = prometheus.NewRegistry()
		opts.Registerer = reg
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(GRPCServerOptions(cfg)...)
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testEnv{srv: srv, g: g, reg: reg, logs: logs, client: v3procservicepb.NewExternalProcessorClient(conn)}
}

// envoyStream plays Envoy's side of one ext_proc stream: it sends one message at a time and
// waits for its reply, as Envoy does in BUFFERED mode.
type envoyStream struct {
	t      testing.TB
	stream v3procservicepb.ExternalProcessor_ProcessClient
	cancel context.CancelFunc
}

func (e *testEnv) open(t testing.TB) *envoyStream {
	t.Helper()
	return e.openMD(t)
}

// openMD opens a stream with the gRPC metadata kv (key, value, ...).
func (e *testEnv) openMD(t testing.TB, kv ...string) *envoyStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	s, err := e.client.Process(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Process() = %v", err)
	}
	es := &envoyStream{t: t, stream: s, cancel: cancel}
	t.Cleanup(es.close)
	return es
}

// openUpstream opens a stream as the upstream filter of a model cluster does, naming itself
// in the gRPC metadata.
func (e *testEnv) openUpstream(t testing.TB) *envoyStream {
	t.Helper()
	return e.openMD(t, routeheaders.FilterPhase, routeheaders.PhaseUpstream)
}

// close ends the stream as Envoy does: half-close, then cancel.
func (es *envoyStream) close() {
	_ = es.stream.CloseSend()
	es.cancel()
}

func (es *envoyStream) roundTrip(req *v3procservicepb.ProcessingRequest) *v3procservicepb.ProcessingResponse {
	es.t.Helper()
	if err := es.stream.Send(req); err != nil {
		es.t.Fatalf("Send() = %v", err)
	}
	resp, err := es.stream.Recv()
	if err != nil {
		es.t.Fatalf("Recv() = %v", err)
	}
	return resp
}

// headerMap builds an Envoy header map with values in raw_value only.
func headerMap(kv ...string) *v3corepb.HeaderMap {
	hm := &v3corepb.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &v3corepb.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return hm
}

func requestHeaders(eos bool, kv ...string) *v3procservicepb.ProcessingRequest {
	return &v3procservicepb.ProcessingRequest{
		Request: &v3procservicepb.ProcessingRequest_RequestHeaders{
			RequestHeaders: &v3procservicepb.HttpHeaders{Headers: headerMap(kv...), EndOfStream: eos},
		},
	}
}

func postHeaders(path string, bodyLen int) *v3procservicepb.ProcessingRequest {
	return requestHeaders(false, ":method", "POST", ":path", path, ":authority", "gw",
		"x-request-id", "req-123", "content-type", "application/json",
		"content-length", strconv.Itoa(bodyLen), "authorization", "Bearer client-secret")
}

func requestBody(body string) *v3procservicepb.ProcessingRequest {
	return &v3procservicepb.ProcessingRequest{
		Request: &v3procservicepb.ProcessingRequest_RequestBody{
			RequestBody: &v3procservicepb.HttpBody{Body: []byte(body), EndOfStream: true},
		},
	}
}

func responseHeaders(status, contentType string) *v3procservicepb.ProcessingRequest {
	attrs, err := structpb.NewStruct(map[string]any{
		"upstream.address": "127.0.0.1:18081", "xds.cluster_name": "model_gpt-4o-mini_via_openai",
		routeheaders.ProviderAttribute: "openai",
	})
	if err != nil {
		panic(err)
	}
	return &v3procservicepb.ProcessingRequest{
		Attributes: map[string]*structpb.Struct{attributesKey: attrs},
		Request: &v3procservicepb.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &v3procservicepb.HttpHeaders{
				Headers: headerMap(":status", status, "content-type", contentType),
			},
		},
	}
}

func responseBody(body string, eos bool) *v3procservicepb.ProcessingRequest {
	return &v3procservicepb.ProcessingRequest{
		Request: &v3procservicepb.ProcessingRequest_ResponseBody{
			ResponseBody: &v3procservicepb.HttpBody{Body: []byte(body), EndOfStream: eos},
		},
	}
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

func benchContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), defaultTestTimeout)
}
