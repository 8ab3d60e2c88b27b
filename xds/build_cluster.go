package xds

import (
	"fmt"
	"net"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	v3httppb "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/phochat/phogate/internal/config"
)

// maxEndpointWeight keeps the weights of one locality far below Envoy's limit of 2^32-1 for
// their sum (envoy-notes §5.5).
const maxEndpointWeight = 1 << 20

// httpProtocolOptionsKey is the key of typed_extension_protocol_options under which Envoy
// looks for the upstream HTTP options.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// buildExtProcCluster is the cluster of the ext_proc server. Envoy's gRPC client needs
// HTTP/2 on it, which only typed_extension_protocol_options can say (envoy-notes §2.1).
func buildExtProcCluster(addr string) (*v3clusterpb.Cluster, error) {
	host, port, err := config.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("building ext_proc cluster: address %q: %w", addr, err)
	}
	c := &v3clusterpb.Cluster{
		Name:                 ExtProcClusterName,
		ConnectTimeout:       dur(extProcConnectTimeout),
		ClusterDiscoveryType: &v3clusterpb.Cluster_Type{Type: discoveryType(host)},
		LoadAssignment: &v3endpointpb.ClusterLoadAssignment{
			ClusterName: ExtProcClusterName,
			Endpoints: []*v3endpointpb.LocalityLbEndpoints{{
				LbEndpoints: []*v3endpointpb.LbEndpoint{lbEndpoint(host, port, 1)},
			}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			httpProtocolOptionsKey: mustAny(&v3httppb.HttpProtocolOptions{
				UpstreamProtocolOptions: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_{
					ExplicitHttpConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig{
						ProtocolConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
							Http2ProtocolOptions: &v3corepb.Http2ProtocolOptions{},
						},
					},
				},
			}),
		},
		// Every client request is one ext_proc stream on this cluster.
		CircuitBreakers: circuitBreakers(),
	}
	return c, nil
}

// discoveryType is STATIC for an IP address and STRICT_DNS for a host name, as in a compose
// file or Kubernetes service.
func discoveryType(host string) v3clusterpb.Cluster_DiscoveryType {
	if net.ParseIP(host) != nil {
		return v3clusterpb.Cluster_STATIC
	}
	return v3clusterpb.Cluster_STRICT_DNS
}

// buildProviderCluster is the cluster of one provider. With IP endpoints it is an EDS
// cluster, so weights change through EDS alone without re-warming the cluster
// (envoy-notes §5.6). EDS cannot carry host names, so a provider reached by name (such as
// api.openai.com) gets a STRICT_DNS cluster with its endpoints inline instead.
func buildProviderCluster(p *config.Provider, lb LBPolicy, eds bool) *v3clusterpb.Cluster {
	name := ProviderClusterName(p.Name)
	c := &v3clusterpb.Cluster{
		Name:           name,
		ConnectTimeout: dur(providerConnectTimeout),
		LbPolicy:       v3clusterpb.Cluster_ROUND_ROBIN,
		// Locality weights count only with this set (envoy-notes §5.5).
		CommonLbConfig: &v3clusterpb.Cluster_CommonLbConfig{
			LocalityConfigSpecifier: &v3clusterpb.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
				LocalityWeightedLbConfig: &v3clusterpb.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
			},
		},
		OutlierDetection: outlierDetection(),
		HealthChecks:     healthChecks(),
		CircuitBreakers:  circuitBreakers(),
	}
	if lb == LeastRequest {
		c.LbPolicy = v3clusterpb.Cluster_LEAST_REQUEST
	}
	if eds {
		c.ClusterDiscoveryType = &v3clusterpb.Cluster_Type{Type: v3clusterpb.Cluster_EDS}
		c.EdsClusterConfig = &v3clusterpb.Cluster_EdsClusterConfig{
			EdsConfig:   adsSource(),
			ServiceName: name,
		}
	} else {
		c.ClusterDiscoveryType = &v3clusterpb.Cluster_Type{Type: v3clusterpb.Cluster_STRICT_DNS}
	}
	if p.TLS() {
		c.TransportSocket = upstreamTLS(p.Host())
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			httpProtocolOptionsKey: mustAny(&v3httppb.HttpProtocolOptions{
				// SNI and certificate name checks follow the rewritten Host header.
				UpstreamHttpProtocolOptions: &v3corepb.UpstreamHttpProtocolOptions{
					AutoSni:           true,
					AutoSanValidation: true,
				},
				UpstreamProtocolOptions: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_{
					ExplicitHttpConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig{
						ProtocolConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
							HttpProtocolOptions: &v3corepb.Http1ProtocolOptions{},
						},
					},
				},
			}),
		}
	}
	return c
}

// upstreamTLS verifies the provider's certificate against the system roots and its name.
func upstreamTLS(host string) *v3corepb.TransportSocket {
	tc := &v3tlspb.UpstreamTlsContext{
		Sni: host,
		CommonTlsContext: &v3tlspb.CommonTlsContext{
			ValidationContextType: &v3tlspb.CommonTlsContext_ValidationContext{
				ValidationContext: &v3tlspb.CertificateValidationContext{
					SystemRootCerts: &v3tlspb.CertificateValidationContext_SystemRootCerts{},
					MatchTypedSubjectAltNames: []*v3tlspb.SubjectAltNameMatcher{{
						SanType: v3tlspb.SubjectAltNameMatcher_DNS,
						Matcher: &v3matcherpb.StringMatcher{
							MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: host},
						},
					}},
				},
			},
		},
	}
	return &v3corepb.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &v3corepb.TransportSocket_TypedConfig{TypedConfig: mustAny(tc)},
	}
}

// outlierDetection ejects an endpoint after repeated 5xx or gateway failures (502, 503,
// 504, connect errors), at most half of a cluster at a time so a provider-wide outage does
// not empty it.
func outlierDetection() *v3clusterpb.OutlierDetection {
	return &v3clusterpb.OutlierDetection{
		Consecutive_5Xx:                    u32(5),
		ConsecutiveGatewayFailure:          u32(3),
		EnforcingConsecutiveGatewayFailure: u32(100),
		Interval:                           dur(10 * time.Second),
		BaseEjectionTime:                   dur(30 * time.Second),
		MaxEjectionPercent:                 u32(50),
	}
}

// healthChecks is an active TCP check: model providers have no standard health path, and
// a request to a model would cost money. It finds endpoints that stop accepting
// connections; outlier detection finds those that accept and then fail.
func healthChecks() []*v3corepb.HealthCheck {
	return []*v3corepb.HealthCheck{{
		Timeout:            dur(2 * time.Second),
		Interval:           dur(10 * time.Second),
		UnhealthyThreshold: u32(3),
		HealthyThreshold:   u32(1),
		HealthChecker: &v3corepb.HealthCheck_TcpHealthCheck_{
			TcpHealthCheck: &v3corepb.HealthCheck_TcpHealthCheck{},
		},
	}}
}

func circuitBreakers() *v3clusterpb.CircuitBreakers {
	return &v3clusterpb.CircuitBreakers{
		Thresholds: []*v3clusterpb.CircuitBreakers_Thresholds{{
			Priority:           v3corepb.RoutingPriority_DEFAULT,
			MaxConnections:     u32(circuitBreakerLimit),
			MaxPendingRequests: u32(circuitBreakerLimit),
			MaxRequests:        u32(circuitBreakerLimit),
			MaxRetries:         u32(maxRetryBudget),
		}},
	}
}

// buildLoadAssignment lists a provider's endpoints for its own cluster.
func buildLoadAssignment(p *config.Provider, weights map[string]uint32,
) (*v3endpointpb.ClusterLoadAssignment, error) {
	loc, err := providerLocality(p, weights)
	if err != nil {
		return nil, err
	}
	return &v3endpointpb.ClusterLoadAssignment{
		ClusterName: ProviderClusterName(p.Name),
		Endpoints:   []*v3endpointpb.LocalityLbEndpoints{loc},
	}, nil
}

// providerLocality lists a provider's endpoints in one locality named after the provider,
// with weight 1: gRPC clients drop a locality without weight (envoy-notes §5.5). weights
// overrides the configured endpoint weights.
func providerLocality(p *config.Provider, weights map[string]uint32,
) (*v3endpointpb.LocalityLbEndpoints, error) {
	if len(p.Endpoints) == 0 {
		return nil, fmt.Errorf("building endpoints of provider %q: none configured", p.Name)
	}
	loc := &v3endpointpb.LocalityLbEndpoints{
		Locality:            &v3corepb.Locality{Region: p.Name},
		LoadBalancingWeight: u32(1),
	}
	for _, e := range p.Endpoints {
		host, port, err := config.SplitHostPort(e.Address)
		if err != nil {
			return nil, fmt.Errorf("building endpoints of provider %q: %w", p.Name, err)
		}
		w := uint32(min(max(e.Weight, 1), maxEndpointWeight))
		if v, ok := weights[e.Address]; ok {
			w = max(v, 1)
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(host, port, w))
	}
	return loc, nil
}

// lbEndpoint is one endpoint. Its weight is at least 1: Envoy rejects 0 and gRPC clients
// NACK it (envoy-notes §5.5).
func lbEndpoint(host string, port, weight uint32) *v3endpointpb.LbEndpoint {
	return &v3endpointpb.LbEndpoint{
		HostIdentifier: &v3endpointpb.LbEndpoint_Endpoint{
			Endpoint: &v3endpointpb.Endpoint{Address: socketAddress(host, port)},
		},
		LoadBalancingWeight: u32(max(weight, 1)),
	}
}
