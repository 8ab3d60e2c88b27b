package xds

import (
	"fmt"
	"math"
	"regexp"
	"strings"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3previoushostspb "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	v3prioritypb "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	v3matcherpb "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/internal/routeheaders"
)

const (
	previousHostsName = "envoy.retry_host_predicates.previous_hosts"
	// previousPrioritiesName is the retry priority plugin that skips tried priorities.
	previousPrioritiesName = "envoy.retry_priorities.previous_priorities"
	// retryOn retries failed connects, resets before any response, 5xx and the status codes
	// in retriable_status_codes (429).
	retryOn = "connect-failure,reset,5xx,retriable-status-codes"
)

// buildRouteConfig builds the one RouteConfiguration, in match order:
//  1. one route per model, on the model header the ext_proc server sets, splitting over the
//     model's clusters (see build_model.go);
//  2. with failure_mode open, chat and embeddings routes without a header for requests that
//     reach Envoy unprocessed because the ext_proc server failed (see failOpenRoutes);
//  3. a catch-all to the first provider for paths the ext_proc server leaves alone.
//
// Every route matches the path prefix "/" plus a header rather than "/v1/", so that gRPC
// xDS clients, whose paths are "/<service>/<method>", can follow the same configuration.
func buildRouteConfig(cfg *config.Config, opts BuildOptions,
) (*v3routepb.RouteConfiguration, error) {
	var routes []*v3routepb.Route
	for _, m := range cfg.Models {
		r, err := modelRoute(cfg, m.Name, opts.ClusterWeights[m.Name])
		if err != nil {
			return nil, err
		}
		routes = append(routes, r)
	}
	if cfg.ExtProc.FailOpen() {
		routes = append(routes, failOpenRoutes(cfg, firstProvider(cfg))...)
	}
	routes = append(routes, providerRoute(cfg, firstProvider(cfg), "default", nil))

	return &v3routepb.RouteConfiguration{
		Name: RouteConfigName,
		VirtualHosts: []*v3routepb.VirtualHost{{
			Name:    VirtualHostName,
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}, nil
}

// failOpenPaths are the API calls Envoy still serves when the ext_proc server is down and the
// filter fails open.
var failOpenPaths = []string{"/v1/chat/completions", "/v1/embeddings"}

// failOpenRoutes serve chat and embeddings requests that reach Envoy without a routing
// header, which happens only when the ext_proc filter failed open: they go to p with p's
// credential, set by Envoy since phogate could not set it. Such requests skip budgets, rate
// limits and the cache, which is what failing open means. Other paths stay on the catch-all
// route, which never carries a provider credential, so a client cannot use the gateway's
// key for provider endpoints that phogate does not govern.
func failOpenRoutes(cfg *config.Config, p *config.Provider) []*v3routepb.Route {
	var out []*v3routepb.Route
	for _, path := range failOpenPaths {
		r := providerRoute(cfg, p, "fail_open"+strings.ReplaceAll(path, "/", "_"), nil)
		r.Match.PathSpecifier = &v3routepb.RouteMatch_Path{Path: path}
		r.RequestHeadersToRemove = []string{"authorization"}
		if key := p.APIKey.Reveal(); key != "" {
			value := key
			if p.AuthHeader == "authorization" {
				value = "Bearer " + key
			}
			r.RequestHeadersToAdd = []*v3corepb.HeaderValueOption{{
				Header:       &v3corepb.HeaderValue{Key: p.AuthHeader, Value: value},
				AppendAction: v3corepb.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}}
		}
		out = append(out, r)
	}
	return out
}

func headerMatch(name, value string) []*v3routepb.HeaderMatcher {
	return []*v3routepb.HeaderMatcher{{
		Name: name,
		HeaderMatchSpecifier: &v3routepb.HeaderMatcher_StringMatch{
			StringMatch: &v3matcherpb.StringMatcher{
				MatchPattern: &v3matcherpb.StringMatcher_Exact{Exact: value},
			},
		},
	}}
}

// providerRoute sends matching requests to p's cluster, rewriting path and host for p.
func providerRoute(cfg *config.Config, p *config.Provider, name string,
	headers []*v3routepb.HeaderMatcher,
) *v3routepb.Route {
	a := baseAction(cfg)
	a.ClusterSpecifier = &v3routepb.RouteAction_Cluster{Cluster: ProviderClusterName(p.Name)}
	a.RegexRewrite = pathRewrite(p.PathPrefix())
	a.HostRewriteSpecifier = &v3routepb.RouteAction_HostRewriteLiteral{
		HostRewriteLiteral: p.HostHeader(),
	}
	return &v3routepb.Route{
		Name: name,
		Match: &v3routepb.RouteMatch{
			PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"},
			Headers:       headers,
		},
		Action: &v3routepb.Route_Route{Route: a},
	}
}

// modelRoute splits requests for model by weight over its model clusters, one per primary
// provider, each with the other providers behind it as fallback priorities. Path, host and
// credential are set per attempt by the clusters' upstream ext_proc filter, so the route
// rewrites nothing.
func modelRoute(cfg *config.Config, model string, weights map[string]uint32,
) (*v3routepb.Route, error) {
	providers := cfg.ProvidersFor(model)
	if len(providers) == 0 {
		return nil, fmt.Errorf("building route for model %q: no provider serves it", model)
	}
	wc := &v3routepb.WeightedCluster{}
	var sum uint64
	for _, p := range cfg.PrimaryProvidersFor(model) {
		w := uint32(1)
		if v, ok := weights[p.Name]; ok {
			w = v
		}
		if w == 0 {
			continue
		}
		sum += uint64(w)
		wc.Clusters = append(wc.Clusters, &v3routepb.WeightedCluster_ClusterWeight{
			Name:   ModelClusterName(model, p.Name),
			Weight: u32(w),
		})
	}
	if sum == 0 || sum > math.MaxUint32 {
		return nil, fmt.Errorf("building route for model %q: weight sum %d must be in 1..%d",
			model, sum, uint32(math.MaxUint32))
	}

	a := baseAction(cfg)
	a.ClusterSpecifier = &v3routepb.RouteAction_WeightedClusters{WeightedClusters: wc}
	if len(wc.Clusters) == 1 {
		a.ClusterSpecifier = &v3routepb.RouteAction_Cluster{Cluster: wc.Clusters[0].Name}
	}
	if a.RetryPolicy != nil && len(providers) > 1 {
		// Each retry goes to a priority not tried yet, that is to the next provider; once
		// all were tried, Envoy starts over from the first.
		a.RetryPolicy.RetryPriority = &v3routepb.RetryPolicy_RetryPriority{
			Name: previousPrioritiesName,
			ConfigType: &v3routepb.RetryPolicy_RetryPriority_TypedConfig{
				TypedConfig: mustAny(&v3prioritypb.PreviousPrioritiesConfig{
					UpdateFrequency: 1,
				}),
			},
		}
	}
	return &v3routepb.Route{
		Name: "model_" + model,
		Match: &v3routepb.RouteMatch{
			PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: "/"},
			Headers:       headerMatch(HeaderModel, model),
		},
		Action: &v3routepb.Route_Route{Route: a},
	}, nil
}

// baseAction holds the settings every route shares: timeout and retries.
func baseAction(cfg *config.Config) *v3routepb.RouteAction {
	retries := config.DefaultRetries
	if cfg.Listener.Retries != nil {
		retries = *cfg.Listener.Retries
	}
	return &v3routepb.RouteAction{
		// Envoy's default route timeout is 15 s, which would cut long generations; 0 turns
		// it off so streams last as long as the model writes (envoy-notes "What this
		// means" 3, §3.2). The listener's stream_idle_timeout still ends dead streams.
		Timeout:     dur(cfg.Listener.UpstreamTimeout.Duration),
		RetryPolicy: retryPolicy(retries),
	}
}

// retryPolicy retries on another host on connect failures, resets, 5xx and 429, honouring
// Retry-After. Envoy retries only until response headers have gone downstream, so a stream
// that already started is never replayed. gRPC clients keep only num_retries from it.
func retryPolicy(n int) *v3routepb.RetryPolicy {
	if n <= 0 {
		// gRPC clients reject num_retries 0, and no policy means no retries anyway.
		return nil
	}
	return &v3routepb.RetryPolicy{
		RetryOn:              retryOn,
		NumRetries:           u32(uint32(n)),
		RetriableStatusCodes: []uint32{429},
		RetryHostPredicate: []*v3routepb.RetryPolicy_RetryHostPredicate{{
			Name: previousHostsName,
			ConfigType: &v3routepb.RetryPolicy_RetryHostPredicate_TypedConfig{
				TypedConfig: mustAny(&v3previoushostspb.PreviousHostsPredicate{}),
			},
		}},
		HostSelectionRetryMaxAttempts: hostSelectionRetries,
		RateLimitedRetryBackOff: &v3routepb.RetryPolicy_RateLimitedRetryBackOff{
			ResetHeaders: []*v3routepb.RetryPolicy_ResetHeader{{
				Name:   "retry-after",
				Format: v3routepb.RetryPolicy_SECONDS,
			}},
			MaxInterval: dur(rateLimitedMaxBackOff),
		},
	}
}

// pathRewrite maps the client's "/v1/" to the provider's base path, or returns nil when
// they are the same.
func pathRewrite(prefix string) *v3matcherpb.RegexMatchAndSubstitute {
	if prefix+"/" == routeheaders.ClientPathPrefix {
		return nil
	}
	return &v3matcherpb.RegexMatchAndSubstitute{
		Pattern:      &v3matcherpb.RegexMatcher{Regex: "^" + regexp.QuoteMeta(routeheaders.ClientPathPrefix)},
		Substitution: prefix + "/",
	}
}
