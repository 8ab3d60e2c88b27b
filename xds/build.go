package xds

import (
	"fmt"
	"math"
	"net"
	"slices"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/phochat/phogate/internal/config"
)

// Resources is one complete set of Envoy resources: what [Build] produces and what
// [Server.Publish] serves. The slices hold Envoy v3 protos; after Publish they are shared with
// the server and must not be modified.
type Resources struct {
	// Listeners are the listeners served to Envoy.
	Listeners []*v3listenerpb.Listener
	// GRPCListeners are api_listener listeners for gRPC xDS clients. They are served only to
	// gRPC clients, never to Envoy, which accepts an api_listener only in its bootstrap.
	GRPCListeners []*v3listenerpb.Listener
	// Routes are the RouteConfigurations loaded over RDS.
	Routes []*v3routepb.RouteConfiguration
	// Clusters are the upstream clusters.
	Clusters []*v3clusterpb.Cluster
	// Endpoints are the ClusterLoadAssignments of the EDS clusters.
	Endpoints []*v3endpointpb.ClusterLoadAssignment
}

// LBPolicy is the load-balancing policy of the provider clusters.
type LBPolicy int

const (
	// RoundRobin is weighted round robin over the endpoints.
	RoundRobin LBPolicy = iota
	// LeastRequest picks the less loaded of two random endpoints, scaled by weight. It suits
	// model providers, whose answer times vary by orders of magnitude.
	LeastRequest
)

// BuildOptions adjust what [Build] generates beyond the gateway config. The zero value is
// valid.
type BuildOptions struct {
	// EndpointWeights overrides endpoint weights: provider name → endpoint address → weight.
	// A weight of 0 is raised to 1, since Envoy and gRPC reject 0; drain an endpoint by
	// removing it from the config instead.
	EndpointWeights map[string]map[string]uint32
	// ClusterWeights overrides the per-model split: model name → provider name → weight. A
	// weight of 0 takes the provider out of the model's split; at least one must stay above 0.
	ClusterWeights map[string]map[string]uint32
	// LBPolicy is the provider clusters' load-balancing policy.
	LBPolicy LBPolicy
	// GRPCListenerName, when set, adds an api_listener of that name for gRPC xDS clients,
	// which dial "xds:///<GRPCListenerName>" and follow the same route configuration.
	GRPCListenerName string
	// AccessLog adds an access log to standard output on the HTTP listener.
	AccessLog bool
}

// Timeouts and limits of the generated clusters. They are not in the gateway config because
// operators rarely need to change them; each states why it has its value.
const (
	// providerConnectTimeout bounds a TCP (and TLS) connect to a provider. Model providers
	// answer connects fast even when answers are slow.
	providerConnectTimeout = 5 * time.Second
	// extProcConnectTimeout bounds a connect to the local ext_proc server.
	extProcConnectTimeout = time.Second
	// circuitBreakerLimit replaces Envoy's default of 1024 connections, pending requests and
	// requests per cluster: LLM streams stay open for minutes, so a busy gateway holds many
	// thousands at once, and every one of them is also an ext_proc stream.
	circuitBreakerLimit = 100_000
	// maxRetryBudget is the number of concurrent retries a cluster allows.
	maxRetryBudget = 1_000
	// rateLimitedMaxBackOff bounds a Retry-After wait; longer ones fall back to the
	// exponential back-off.
	rateLimitedMaxBackOff = 30 * time.Second
	// hostSelectionRetries is how often Envoy redraws an endpoint to avoid the one that just
	// failed (retry_host_predicate previous_hosts).
	hostSelectionRetries = 5
)

// Build turns the gateway config into Envoy resources: the HTTP listener with the ext_proc
// filter, one route configuration, the ext_proc cluster, a cluster per provider and the
// endpoints of the EDS clusters. The output is deterministic: the same input gives equal
// resources in the same order. It does not validate the result against Envoy's rules; see
// [Validate].
func Build(cfg *config.Config, opts BuildOptions) (*Resources, error) {
	if cfg == nil || len(cfg.Providers) == 0 {
		return nil, fmt.Errorf("building resources: config has no providers")
	}
	if cfg.Listener.MaxRequestBytes <= 0 || cfg.Listener.MaxRequestBytes > math.MaxUint32 {
		return nil, fmt.Errorf("building resources: max_request_bytes %d out of range",
			cfg.Listener.MaxRequestBytes)
	}

	hcm, err := buildHCM(cfg, opts)
	if err != nil {
		return nil, err
	}
	r := &Resources{Listeners: []*v3listenerpb.Listener{buildListener(cfg, hcm)}}
	if opts.GRPCListenerName != "" {
		r.GRPCListeners = []*v3listenerpb.Listener{buildGRPCListener(opts.GRPCListenerName)}
	}

	rc, err := buildRouteConfig(cfg, opts)
	if err != nil {
		return nil, err
	}
	r.Routes = []*v3routepb.RouteConfiguration{rc}

	extProc, err := buildExtProcCluster(cfg.Gateway.ExtProcClusterAddress)
	if err != nil {
		return nil, err
	}
	r.Clusters = append(r.Clusters, extProc)
	for i := range cfg.Providers {
		p := &cfg.Providers[i]
		cla, err := buildLoadAssignment(p, opts.EndpointWeights[p.Name])
		if err != nil {
			return nil, err
		}
		c := buildProviderCluster(p, opts.LBPolicy, allIPs(cla))
		if c.GetType() == v3clusterpb.Cluster_EDS {
			r.Endpoints = append(r.Endpoints, cla)
		} else {
			c.LoadAssignment = cla
		}
		r.Clusters = append(r.Clusters, c)
	}
	if err := buildModelClusters(cfg, opts, r); err != nil {
		return nil, err
	}
	return r, nil
}

// adsSource says "fetch this over the ADS stream", for every EDS and RDS reference. Envoy
// then orders updates make-before-break (envoy-notes §5.3), and gRPC xDS clients support
// nothing else (§7.1).
func adsSource() *v3corepb.ConfigSource {
	return &v3corepb.ConfigSource{
		ConfigSourceSpecifier: &v3corepb.ConfigSource_Ads{Ads: &v3corepb.AggregatedConfigSource{}},
		ResourceApiVersion:    v3corepb.ApiVersion_V3,
	}
}

// mustAny packs m. Marshalling a generated message built in this package cannot fail short
// of a bug, so a failure panics with the type's name.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("packing %T: %v", m, err))
	}
	return a
}

func socketAddress(host string, port uint32) *v3corepb.Address {
	return &v3corepb.Address{Address: &v3corepb.Address_SocketAddress{
		SocketAddress: &v3corepb.SocketAddress{
			Address:       host,
			PortSpecifier: &v3corepb.SocketAddress_PortValue{PortValue: port},
		},
	}}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// allIPs reports whether every endpoint of cla is an IP literal. EDS carries only
// addresses; Envoy does not resolve host names from EDS.
func allIPs(cla *v3endpointpb.ClusterLoadAssignment) bool {
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if net.ParseIP(e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()) == nil {
				return false
			}
		}
	}
	return true
}

// firstProvider is the provider that takes unrouted requests: the lowest priority value,
// then the first in the file.
func firstProvider(cfg *config.Config) *config.Provider {
	ps := make([]*config.Provider, len(cfg.Providers))
	for i := range cfg.Providers {
		ps[i] = &cfg.Providers[i]
	}
	slices.SortStableFunc(ps, func(a, b *config.Provider) int { return a.Priority - b.Priority })
	return ps[0]
}

// namedResource is one resource with its kind and name, for error messages.
type namedResource struct {
	kind, name string
	msg        proto.Message
}

// all lists every resource of r.
func (r *Resources) all() []namedResource {
	var out []namedResource
	for _, l := range slicesConcat(r.Listeners, r.GRPCListeners) {
		out = append(out, namedResource{"listener", l.GetName(), l})
	}
	for _, rc := range r.Routes {
		out = append(out, namedResource{"route configuration", rc.GetName(), rc})
	}
	for _, c := range r.Clusters {
		out = append(out, namedResource{"cluster", c.GetName(), c})
	}
	for _, e := range r.Endpoints {
		out = append(out, namedResource{"endpoints", e.GetClusterName(), e})
	}
	return out
}
