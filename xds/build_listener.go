package xds

import (
	"fmt"
	"time"

	v3accesslogpb "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3streampb "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/internal/routeheaders"
)

// Names of HTTP filters and extensions as Envoy registers them.
const (
	extProcFilterName = "envoy.filters.http.ext_proc"
	stdoutLogName     = "envoy.access_loggers.stdout"
)

func buildListener(cfg *config.Config, hcm *v3hcmpb.HttpConnectionManager) *v3listenerpb.Listener {
	return &v3listenerpb.Listener{
		Name:    ListenerName,
		Address: socketAddress(cfg.Listener.Address, uint32(cfg.Listener.Port)),
		// The buffer limit per connection is also the limit of a buffered request body:
		// larger bodies get 413 from Envoy and never reach ext_proc (envoy-notes §3.1).
		PerConnectionBufferLimitBytes: u32(uint32(cfg.Listener.MaxRequestBytes)),
		FilterChains: []*v3listenerpb.FilterChain{{
			Filters: []*v3listenerpb.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &v3listenerpb.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
			}},
		}},
	}
}

func buildHCM(cfg *config.Config, opts BuildOptions) (*v3hcmpb.HttpConnectionManager, error) {
	ep, err := buildExtProc(cfg)
	if err != nil {
		return nil, err
	}
	hcm := &v3hcmpb.HttpConnectionManager{
		StatPrefix: StatPrefix,
		CodecType:  v3hcmpb.HttpConnectionManager_AUTO,
		RouteSpecifier: &v3hcmpb.HttpConnectionManager_Rds{Rds: &v3hcmpb.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: RouteConfigName,
		}},
		// A stream with no bytes in either direction for this long is reset. It must exceed
		// the longest pause of a slow model between two streamed tokens.
		StreamIdleTimeout: dur(cfg.Listener.StreamIdleTimeout.Duration),
		// ext_proc keys its ledger rows and logs on x-request-id, and asks for it as the
		// request.id attribute (envoy-notes §2.3).
		GenerateRequestId: wrapperspb.Bool(true),
		HttpFilters: []*v3hcmpb.HttpFilter{
			{
				Name:       extProcFilterName,
				ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(ep)},
			},
			routerFilter(),
		},
	}
	if opts.AccessLog {
		hcm.AccessLog = []*v3accesslogpb.AccessLog{{
			Name: stdoutLogName,
			ConfigType: &v3accesslogpb.AccessLog_TypedConfig{
				TypedConfig: mustAny(&v3streampb.StdoutAccessLog{}),
			},
		}}
	}
	return hcm, nil
}

// routerFilter is the terminal HTTP filter; it must come last (envoy-notes §6).
func routerFilter() *v3hcmpb.HttpFilter {
	return &v3hcmpb.HttpFilter{
		Name:       wellknown.Router,
		ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(&v3routerpb.Router{})},
	}
}

// buildExtProc configures Envoy's ext_proc filter to call the phogate ext_proc server.
func buildExtProc(cfg *config.Config) (*v3extprocpb.ExternalProcessor, error) {
	mt := cfg.ExtProc.MessageTimeout.Duration
	if mt <= 0 {
		return nil, fmt.Errorf("building ext_proc filter: message_timeout must be positive")
	}
	return &v3extprocpb.ExternalProcessor{
		// Envoy's own gRPC client over a named cluster, which must speak HTTP/2
		// (envoy-notes §2.2); see buildExtProcCluster.
		GrpcService: &v3corepb.GrpcService{
			TargetSpecifier: &v3corepb.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &v3corepb.GrpcService_EnvoyGrpc{ClusterName: ExtProcClusterName},
			},
		},
		// Fail open keeps chat working unprocessed when phogate is down or late; closed
		// answers 500 (504 on a message timeout) instead (envoy-notes §2.2, §3.2).
		FailureModeAllow: cfg.ExtProc.FailOpen(),
		ProcessingMode: &v3extprocpb.ProcessingMode{
			// Request headers identify the caller and may be answered at once.
			RequestHeaderMode: v3extprocpb.ProcessingMode_SEND,
			// Routing needs the whole JSON body (model, stream, messages), so it arrives
			// as one message (envoy-notes "What this means" 1, §1.4).
			RequestBodyMode: v3extprocpb.ProcessingMode_BUFFERED,
			// Response headers carry the content type that decides the body mode.
			ResponseHeaderMode: v3extprocpb.ProcessingMode_SEND,
			// JSON answers are read whole for usage and caching. For text/event-stream the
			// ext_proc server switches to STREAMED with mode_override, so SSE is never
			// buffered (envoy-notes "What this means" 3, §1.8).
			ResponseBodyMode:    v3extprocpb.ProcessingMode_BUFFERED,
			RequestTrailerMode:  v3extprocpb.ProcessingMode_SKIP,
			ResponseTrailerMode: v3extprocpb.ProcessingMode_SKIP,
		},
		// Required for the SSE mode_override above; allowed_override_modes stays unset so
		// any mode may be chosen (envoy-notes §1.8).
		AllowModeOverride: true,
		// Envoy's default is 200 ms, too short for a body that has to be parsed, looked up
		// in the cache and routed (envoy-notes "What this means" 7, §2.2).
		MessageTimeout: dur(mt),
		// A request that waits for an identical one in flight (the cache's collapsing)
		// extends its request-body timer once with override_message_timeout, up to this
		// (envoy-notes §1.5). Unset (0) disables overrides.
		MaxMessageTimeout: durOrNil(cfg.MaxMessageTimeout()),
		// request.id is x-request-id, evaluated with the first request message. Upstream
		// attributes exist only once a host is picked, so they go in the response
		// attributes: the ext_proc server learns which endpoint, cluster and provider
		// answered, for latency statistics and the ledger (envoy-notes §2.3).
		RequestAttributes: []string{"request.id"},
		ResponseAttributes: []string{"upstream.address", "xds.cluster_name",
			routeheaders.ProviderAttribute},
		StatPrefix: StatPrefix,
	}, nil
}

// buildGRPCListener is the listener a gRPC xDS client asks for when it dials
// "xds:///<name>". It loads the same route configuration and has only the router: the
// ext_proc filter is Envoy's HTTP integration and gRPC clients do not run it.
func buildGRPCListener(name string) *v3listenerpb.Listener {
	hcm := &v3hcmpb.HttpConnectionManager{
		StatPrefix: StatPrefix,
		RouteSpecifier: &v3hcmpb.HttpConnectionManager_Rds{Rds: &v3hcmpb.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: RouteConfigName,
		}},
		HttpFilters: []*v3hcmpb.HttpFilter{routerFilter()},
	}
	return &v3listenerpb.Listener{
		Name: name,
		ApiListener: &v3listenerpb.ApiListener{
			ApiListener: mustAny(hcm),
		},
	}
}

// durOrNil is dur for a positive d, and nil (unset) otherwise.
func durOrNil(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return dur(d)
}
