// Package extproc is phogate's Envoy external-processing (ext_proc) gRPC server. Envoy opens
// one stream per HTTP request on its listener filter; the server reads the OpenAI request,
// answers what it can itself (model list, errors, cache hits), picks the model and tells
// Envoy where to route through header and body mutations, then watches the answer for usage.
// The filter of each model cluster opens another stream per upstream attempt, on which the
// server makes the rewrites of the provider Envoy picked (upstream.go).
//
// Envoy's listener filter is expected to run with request headers SEND, request body
// BUFFERED, response headers SEND, response body BUFFERED, allow_mode_override true and the
// response attributes "upstream.address", "xds.cluster_name" and
// routeheaders.ProviderAttribute.
package extproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/ledger"
	"github.com/phochat/phogate/routing"
)

// Options configures a [Server].
type Options struct {
	// Config is the gateway configuration; required. The server reads it and never changes
	// it.
	Config *config.Config
	// Logger receives the server's logs; nil discards them. Per-request lines are at Debug.
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil means prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Observer, when set, receives an observation of every answered request, for latency
	// statistics and load balancing.
	Observer Observer
	// Cache, when set, answers repeated chat requests from the exact response cache, with
	// the policy of Config.Cache, and stores complete answers in it. nil turns caching off.
	// The server does not close it.
	Cache *cache.Cache
	// Semantic, when its Index is set, answers paraphrased chat requests after an exact
	// miss (semantic.go). It needs Cache.
	Semantic SemanticOptions
	// Ledger, when set, identifies callers (401 otherwise), applies rate limits and budgets,
	// and records one usage row per admitted request (ledger.go). The server does not close
	// it.
	Ledger *ledger.Ledger
	// Router, when set, chooses the model for the auto model and applies each tier's model
	// policy (route.go).
	Router *routing.Router
}

// Server is the ext_proc server. It is safe for concurrent use; each stream is handled on
// its own goroutine by gRPC.
type Server struct {
	v3procservicepb.UnimplementedExternalProcessorServer

	cfg        *config.Config
	log        *slog.Logger
	metrics    *metrics
	observer   Observer
	modelsBody []byte
	now        func() time.Time

	// The exact cache (cache.go); cache is nil when caching is off.
	cache       *cache.Cache
	cachePolicy *cache.Policy
	// maxMessageTimeout is the filter's max_message_timeout, the longest reply time the
	// server may ask for; 0 when it may not.
	maxMessageTimeout time.Duration
	// semantic is the semantic cache (semantic.go); its Index is nil when it is off.
	semantic SemanticOptions
	// acct is identity, budgets, rate limits and routing (ledger.go, route.go).
	acct accounting
}

var _ v3procservicepb.ExternalProcessorServer = (*Server)(nil)

// New returns a server for opts. It fails when the config is missing or the metrics cannot be
// registered.
func New(opts Options) (*Server, error) {
	if opts.Config == nil {
		return nil, errors.New("extproc: Options.Config is required")
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	s := &Server{
		cfg:      opts.Config,
		log:      lg.With("component", "extproc"),
		metrics:  m,
		observer: opts.Observer,
		now:      time.Now,

		cache:             opts.Cache,
		cachePolicy:       cache.PolicyFromConfig(opts.Config),
		maxMessageTimeout: opts.Config.MaxMessageTimeout(),
	}
	if opts.Cache != nil {
		s.semantic = opts.Semantic
	}
	if err := s.acct.init(opts, reg); err != nil {
		return nil, err
	}
	s.modelsBody, err = modelList(opts.Config, s.now())
	if err != nil {
		return nil, fmt.Errorf("building model list: %w", err)
	}
	return s, nil
}

// Register registers the server's ExternalProcessor service on g.
func (s *Server) Register(g *grpc.Server) {
	v3procservicepb.RegisterExternalProcessorServer(g, s)
}

// msgOverhead is room for headers, attributes and framing above the largest body in one
// ProcessingRequest.
const msgOverhead = 1 << 20

// GRPCServerOptions returns the gRPC server options the ext_proc server needs for cfg: a
// receive limit above the largest buffered body (grpc-go's default of 4 MiB would fail larger
// bodies, envoy-notes §3.1) and keepalive settings that find dead Envoy connections without
// punishing Envoy's own pings.
func GRPCServerOptions(cfg *config.Config) []grpc.ServerOption {
	// Envoy buffers request and response bodies up to the same stream limit.
	limit := max(cfg.Listener.MaxRequestBytes, cfg.ExtProc.MaxBodyBytes) + msgOverhead
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(limit),
		grpc.MaxSendMsgSize(limit),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
	}
}

// Process handles one ext_proc stream, that is one HTTP request. It returns when Envoy closes
// the stream, when the stream's context is cancelled (both are a normal end), after an
// immediate response, or with a gRPC status on a stream error.
func (s *Server) Process(ps v3procservicepb.ExternalProcessor_ProcessServer) error {
	if isUpstreamStream(ps.Context()) {
		return s.processAttempt(ps)
	}
	s.metrics.streamsActive.Inc()
	defer s.metrics.streamsActive.Dec()
	st := s.newStream()
	st.send = ps.Send
	defer st.finish()

	for {
		req, err := ps.Recv()
		if err != nil {
			return s.recvEnd(st.log, err)
		}
		start := time.Now()
		resp, err := st.handle(ps.Context(), req)
		if err != nil {
			s.metrics.streamErrors.WithLabelValues(reasonBadMessage).Inc()
			st.log.Debug("bad ext_proc message", "err", err)
			return status.Error(codes.InvalidArgument, err.Error())
		}
		s.metrics.processing.Observe(time.Since(start).Seconds())
		if err := ps.Send(resp); err != nil {
			s.metrics.streamErrors.WithLabelValues(reasonSend).Inc()
			st.log.Debug("ext_proc send failed", "err", err)
			return err
		}
		if st.done {
			// Envoy closes the stream after an immediate response or once nothing more is
			// expected; returning OK now releases it without waiting.
			return nil
		}
	}
}

// recvEnd classifies the end of a stream. EOF and cancellation are Envoy's normal close
// (envoy-notes §1.1).
func (s *Server) recvEnd(log *slog.Logger, err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded:
		return nil
	}
	s.metrics.streamErrors.WithLabelValues(reasonRecv).Inc()
	log.Debug("ext_proc receive failed", "err", err)
	return err
}

// modelList is the body of GET /v1/models in OpenAI's list format.
func modelList(cfg *config.Config, now time.Time) ([]byte, error) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range cfg.Models {
		list.Data = append(list.Data, model{
			ID: m.Name, Object: "model", Created: now.Unix(), OwnedBy: "phogate",
		})
	}
	return json.Marshal(list)
}

// processingRequestKind names the oneof case of a request, for errors.
func processingRequestKind(req *v3procservicepb.ProcessingRequest) string {
	if req.GetRequest() == nil {
		return "empty"
	}
	return fmt.Sprintf("%T", req.GetRequest())
}
