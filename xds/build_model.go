package xds

import (
	"fmt"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3mutationrulespb "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3upstreamcodecpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/upstream_codec/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3httppb "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/internal/routeheaders"
)

// A model's requests go to model clusters, one per primary provider of the model (those
// with the lowest priority value): the cluster "model_<model>_via_<lead>" holds the
// endpoints of every provider of the model, the lead provider's at priority 0 and the
// others, in fallback order, at priorities 1, 2, ... The model's route splits requests over
// these clusters by weight (cross-provider balancing), and its retry policy moves a failed
// attempt to the next priority (previous_priorities), that is to the next provider. An
// outage at one provider is therefore invisible to clients while another serves.
//
// Providers name a model differently and want their own path, host and credential, so
// those rewrites cannot be made once per request: the upstream ext_proc filter of the model
// cluster asks the ext_proc server for them on every attempt, naming the provider that
// Envoy picked through the endpoint's metadata.

const (
	// upstreamCodecName is the terminal upstream HTTP filter.
	upstreamCodecName = "envoy.filters.http.upstream_codec"
	// transportSocketMatchKey is the endpoint metadata namespace that
	// transport_socket_matches look in.
	transportSocketMatchKey = "envoy.transport_socket_match"
)

// ModelClusterName returns the name of the cluster for model whose priority 0 is the
// provider named lead.
func ModelClusterName(model, lead string) string {
	return ModelClusterPrefix + model + "_via_" + lead
}

// fallbackOrder returns the providers of model with lead first and the others in the
// configured order (priority, then file order).
func fallbackOrder(cfg *config.Config, model string, lead *config.Provider) []*config.Provider {
	out := []*config.Provider{lead}
	for _, p := range cfg.ProvidersFor(model) {
		if p != lead {
			out = append(out, p)
		}
	}
	return out
}

// buildModelClusters builds the model clusters of every model and their endpoints.
func buildModelClusters(cfg *config.Config, opts BuildOptions, r *Resources) error {
	for _, m := range cfg.Models {
		leads := cfg.PrimaryProvidersFor(m.Name)
		if len(leads) == 0 {
			return fmt.Errorf("building clusters of model %q: no provider serves it", m.Name)
		}
		for _, lead := range leads {
			c, cla, err := buildModelCluster(cfg, opts, m.Name, fallbackOrder(cfg, m.Name, lead))
			if err != nil {
				return err
			}
			if c.GetType() == v3clusterpb.Cluster_EDS {
				r.Endpoints = append(r.Endpoints, cla)
			} else {
				c.LoadAssignment = cla
			}
			r.Clusters = append(r.Clusters, c)
		}
	}
	return nil
}

// buildModelCluster builds the cluster whose priorities follow order, with its endpoints.
func buildModelCluster(cfg *config.Config, opts BuildOptions, model string,
	order []*config.Provider,
) (*v3clusterpb.Cluster, *v3endpointpb.ClusterLoadAssignment, error) {
	name := ModelClusterName(model, order[0].Name)
	cla := &v3endpointpb.ClusterLoadAssignment{ClusterName: name}
	renames := false
	for prio, p := range order {
		loc, err := providerLocality(p, opts.EndpointWeights[p.Name])
		if err != nil {
			return nil, nil, err
		}
		loc.Priority = uint32(prio)
		for _, e := range loc.LbEndpoints {
			e.Metadata = endpointMetadata(p)
		}
		cla.Endpoints = append(cla.Endpoints, loc)
		if pm, _ := p.ModelFor(model); pm.Upstream() != model {
			renames = true
		}
	}

	c := buildProviderCluster(order[0], opts.LBPolicy, allIPs(cla))
	c.Name = name
	if c.EdsClusterConfig != nil {
		c.EdsClusterConfig.ServiceName = name
	}
	c.TransportSocket = nil
	for _, p := range order {
		if p.TLS() {
			match := map[string]*structpb.Value{"provider": structpb.NewStringValue(p.Name)}
			c.TransportSocketMatches = append(c.TransportSocketMatches,
				&v3clusterpb.Cluster_TransportSocketMatch{
					Name:            "tls_" + p.Name,
					Match:           &structpb.Struct{Fields: match},
					TransportSocket: upstreamTLS(p.Host()),
				})
		}
	}
	ep, err := buildUpstreamExtProc(cfg, renames)
	if err != nil {
		return nil, nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		httpProtocolOptionsKey: mustAny(&v3httppb.HttpProtocolOptions{
			UpstreamProtocolOptions: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
						HttpProtocolOptions: &v3corepb.Http1ProtocolOptions{},
					},
				},
			},
			HttpFilters: []*v3hcmpb.HttpFilter{
				{
					Name:       extProcFilterName,
					ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(ep)},
				},
				{
					Name: upstreamCodecName,
					ConfigType: &v3hcmpb.HttpFilter_TypedConfig{
						TypedConfig: mustAny(&v3upstreamcodecpb.UpstreamCodec{}),
					},
				},
			},
		}),
	}
	return c, cla, nil
}

// endpointMetadata names the endpoint's provider, for the ext_proc server (through the
// xds.upstream_host_metadata attribute) and for the transport socket match of a TLS
// provider.
func endpointMetadata(p *config.Provider) *v3corepb.Metadata {
	fields := map[string]*structpb.Value{"provider": structpb.NewStringValue(p.Name)}
	md := &v3corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{
		routeheaders.MetadataNamespace: {Fields: fields},
	}}
	if p.TLS() {
		md.FilterMetadata[transportSocketMatchKey] = &structpb.Struct{Fields: fields}
	}
	return md
}

// buildUpstreamExtProc configures the ext_proc filter that runs on every upstream attempt
// of a model cluster. The ext_proc server tells its streams apart from the listener
// filter's by the gRPC metadata header routeheaders.FilterPhase.
func buildUpstreamExtProc(cfg *config.Config, renames bool) (*v3extprocpb.ExternalProcessor, error) {
	mt := cfg.ExtProc.MessageTimeout.Duration
	if mt <= 0 {
		return nil, fmt.Errorf("building upstream ext_proc filter: message_timeout must be positive")
	}
	bodyMode := v3extprocpb.ProcessingMode_NONE
	if renames {
		// A provider that names the model differently gets its name in the body.
		bodyMode = v3extprocpb.ProcessingMode_BUFFERED
	}
	return &v3extprocpb.ExternalProcessor{
		GrpcService: &v3corepb.GrpcService{
			TargetSpecifier: &v3corepb.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &v3corepb.GrpcService_EnvoyGrpc{ClusterName: ExtProcClusterName},
			},
			InitialMetadata: []*v3corepb.HeaderValue{{
				Key: routeheaders.FilterPhase, Value: routeheaders.PhaseUpstream,
			}},
		},
		// An attempt without the provider's path, host and credential cannot succeed, so
		// this filter fails closed: the attempt gets a 500, which the route retries.
		FailureModeAllow: false,
		ProcessingMode: &v3extprocpb.ProcessingMode{
			RequestHeaderMode: v3extprocpb.ProcessingMode_SEND,
			RequestBodyMode:   bodyMode,
			// The status of every attempt, failed ones included, feeds the latency and
			// error statistics; the listener filter sees only the last attempt.
			ResponseHeaderMode:  v3extprocpb.ProcessingMode_SEND,
			ResponseBodyMode:    v3extprocpb.ProcessingMode_NONE,
			RequestTrailerMode:  v3extprocpb.ProcessingMode_SKIP,
			ResponseTrailerMode: v3extprocpb.ProcessingMode_SKIP,
		},
		// The server skips the body when the attempt's provider keeps the model's name.
		AllowModeOverride: true,
		// The provider's Host is a routing header, which ext_proc may set only with
		// allow_all_routing (envoy-notes §2.4).
		MutationRules: &v3mutationrulespb.HeaderMutationRules{
			AllowAllRouting: wrapperspb.Bool(true),
		},
		MessageTimeout: dur(mt),
		// The host is chosen before the upstream filters run, so its metadata is known
		// with the first request message; its address only once connected.
		RequestAttributes:  []string{routeheaders.ProviderAttribute},
		ResponseAttributes: []string{routeheaders.ProviderAttribute, "upstream.address"},
		StatPrefix:         StatPrefix + "_upstream",
	}, nil
}
