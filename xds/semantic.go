package xds

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3upstreamcodecpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/upstream_codec/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3httppb "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

// Validate checks a whole resource set before it is served: every resource with
// [ValidateResource], then the cross-resource and Envoy-only rules of [ValidateSemantics].
// It returns all problems found, joined.
func Validate(r *Resources) error {
	if r == nil {
		return errors.New("nil resources")
	}
	var errs []error
	for _, m := range r.all() {
		if err := ValidateResource(m.msg); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", m.kind, m.name, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return ValidateSemantics(r)
}

// ValidateSemantics checks the rules Envoy applies when it loads a config that the
// generated validators cannot express (envoy-notes §2.1, §6):
//   - resource names are unique per type;
//   - every HTTP connection manager has filters, the router last and only there;
//   - every ext_proc filter has exactly one of grpc_service and http_service, an
//     http_service only with header modes, trailers sent for FULL_DUPLEX_STREAMED bodies,
//     no route_cache_action together with disable_clear_route_cache, well-formed
//     attributes and mutation-rule regexes, and an envoy_grpc cluster that exists and
//     speaks HTTP/2;
//   - every RDS reference names a route configuration and every route configuration is
//     referenced (the api_listener of gRPC clients included, which
//     Snapshot.Consistent does not see);
//   - every routed cluster exists, and weighted-cluster sums lie in 1..2^32-1;
//   - every EDS cluster has exactly one ClusterLoadAssignment and every one belongs to an
//     EDS cluster.
//
// Resources must have passed [ValidateResource]; ValidateSemantics does not repeat it. It
// returns all problems found, joined.
func ValidateSemantics(r *Resources) error {
	c := &checker{r: r, clusters: map[string]*v3clusterpb.Cluster{}}
	c.indexClusters()
	rdsRefs := map[string]bool{}
	for _, l := range slicesConcat(r.Listeners, r.GRPCListeners) {
		for _, hcm := range c.listenerHCMs(l) {
			c.checkHCM(l.GetName(), hcm, rdsRefs)
		}
	}
	c.checkRoutes(rdsRefs)
	c.checkEndpoints()
	for _, cl := range r.Clusters {
		c.checkUpstreamFilters(cl)
	}
	return errors.Join(c.errs...)
}

// checkUpstreamFilters checks a cluster's upstream HTTP filters: the upstream codec must
// be last and only last, as Envoy requires, and ext_proc configs pass the same checks as on
// a listener.
func (c *checker) checkUpstreamFilters(cl *v3clusterpb.Cluster) {
	a := cl.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
	if a == nil {
		return
	}
	opts := &v3httppb.HttpProtocolOptions{}
	if err := a.UnmarshalTo(opts); err != nil {
		c.errorf("cluster %q: %s: %w", cl.GetName(), httpProtocolOptionsKey, err)
		return
	}
	isCodec := func(f *v3hcmpb.HttpFilter) bool {
		return f.GetTypedConfig().MessageIs(&v3upstreamcodecpb.UpstreamCodec{})
	}
	c.checkFilterChain(fmt.Sprintf("cluster %q", cl.GetName()), "upstream HTTP filter",
		opts.GetHttpFilters(), upstreamCodecName, isCodec)
}

type checker struct {
	r        *Resources
	clusters map[string]*v3clusterpb.Cluster
	errs     []error
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func slicesConcat[T any](a, b []T) []T { return append(append([]T(nil), a...), b...) }

func (c *checker) indexClusters() {
	for _, cl := range c.r.Clusters {
		if c.clusters[cl.GetName()] != nil {
			c.errorf("cluster %q is defined twice", cl.GetName())
		}
		c.clusters[cl.GetName()] = cl
	}
	seen := map[string]bool{}
	for _, l := range slicesConcat(c.r.Listeners, c.r.GRPCListeners) {
		if seen[l.GetName()] {
			c.errorf("listener %q is defined twice", l.GetName())
		}
		seen[l.GetName()] = true
	}
}

// listenerHCMs unpacks every HTTP connection manager of l: in its filter chains, its
// default filter chain and its api_listener.
func (c *checker) listenerHCMs(l *v3listenerpb.Listener) []*v3hcmpb.HttpConnectionManager {
	var out []*v3hcmpb.HttpConnectionManager
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains, dc)
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			if f.GetName() != wellknown.HTTPConnectionManager {
				continue
			}
			hcm := &v3hcmpb.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
				c.errorf("listener %q: filter %q: %w", l.GetName(), f.GetName(), err)
				continue
			}
			out = append(out, hcm)
		}
	}
	if al := l.GetApiListener().GetApiListener(); al != nil {
		hcm := &v3hcmpb.HttpConnectionManager{}
		if err := al.UnmarshalTo(hcm); err != nil {
			c.errorf("listener %q: api_listener: %w", l.GetName(), err)
		} else {
			out = append(out, hcm)
		}
	}
	return out
}

func (c *checker) checkHCM(listener string, hcm *v3hcmpb.HttpConnectionManager, rdsRefs map[string]bool) {
	if rds := hcm.GetRds(); rds != nil {
		if rds.GetConfigSource().GetAds() == nil {
			c.errorf("listener %q: RDS %q must be fetched over ADS", listener, rds.GetRouteConfigName())
		}
		rdsRefs[rds.GetRouteConfigName()] = true
	}
	if rc := hcm.GetRouteConfig(); rc != nil {
		c.checkRouteConfig(rc)
	}

	filters := hcm.GetHttpFilters()
	if len(filters) == 0 {
		c.errorf("listener %q: no HTTP filters (the router must be last)", listener)
		return
	}
	isRouter := func(f *v3hcmpb.HttpFilter) bool {
		return f.GetName() == wellknown.Router ||
			f.GetTypedConfig().GetTypeUrl() == "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	}
	c.checkFilterChain(fmt.Sprintf("listener %q", listener), "HTTP filter", filters, "the router", isRouter)
}

// checkFilterChain checks one chain of HTTP filters: the terminal filter (the router of a
// listener, the upstream codec of a cluster) must be last and only last, and every ext_proc
// filter passes [checker.extProcErrors]. where and kind name the chain and its filters in
// errors.
func (c *checker) checkFilterChain(where, kind string, filters []*v3hcmpb.HttpFilter,
	terminal string, isTerminal func(*v3hcmpb.HttpFilter) bool) {
	for i, f := range filters {
		last := i == len(filters)-1
		switch {
		case last && !isTerminal(f):
			c.errorf("%s: last %s is %q, want %s", where, kind, f.GetName(), terminal)
		case !last && isTerminal(f):
			c.errorf("%s: %s is %s %d of %d; it must be last", where, terminal, kind, i+1,
				len(filters))
		}
		ep := &v3extprocpb.ExternalProcessor{}
		if !f.GetTypedConfig().MessageIs(ep) {
			continue
		}
		if err := f.GetTypedConfig().UnmarshalTo(ep); err != nil {
			c.errorf("%s: filter %q: %w", where, f.GetName(), err)
			continue
		}
		for _, err := range c.extProcErrors(ep) {
			c.errorf("%s: filter %q: %w", where, f.GetName(), err)
		}
	}
}

// attributePattern accepts the attribute paths and simple CEL selections phogate uses,
// such as "request.id" or "request.headers['x-foo']".
// TODO: attributes are checked against this pattern, not parsed as CEL as Envoy does; a
// complex expression that Envoy accepts is refused here and one it refuses may pass.
var attributePattern = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*|\['[^']*'\])*$`)

// extProcErrors applies the config-load checks of Envoy's ext_proc filter (envoy-notes §2.1).
func (c *checker) extProcErrors(ep *v3extprocpb.ExternalProcessor) []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	gs, hs := ep.GetGrpcService(), ep.GetHttpService()
	if (gs == nil) == (hs == nil) {
		add("exactly one of grpc_service and http_service must be set")
	}
	pm := ep.GetProcessingMode()
	if hs != nil && (pm.GetRequestBodyMode() != v3extprocpb.ProcessingMode_NONE ||
		pm.GetResponseBodyMode() != v3extprocpb.ProcessingMode_NONE ||
		pm.GetRequestTrailerMode() == v3extprocpb.ProcessingMode_SEND ||
		pm.GetResponseTrailerMode() == v3extprocpb.ProcessingMode_SEND) {
		add("http_service supports only header processing (body modes NONE, trailers not sent)")
	}
	if pm.GetRequestBodyMode() == v3extprocpb.ProcessingMode_FULL_DUPLEX_STREAMED &&
		pm.GetRequestTrailerMode() != v3extprocpb.ProcessingMode_SEND {
		add("request body mode FULL_DUPLEX_STREAMED requires request_trailer_mode SEND")
	}
	if pm.GetResponseBodyMode() == v3extprocpb.ProcessingMode_FULL_DUPLEX_STREAMED &&
		pm.GetResponseTrailerMode() != v3extprocpb.ProcessingMode_SEND {
		add("response body mode FULL_DUPLEX_STREAMED requires response_trailer_mode SEND")
	}
	if ep.GetDisableClearRouteCache() &&
		ep.GetRouteCacheAction() != v3extprocpb.ExternalProcessor_DEFAULT {
		add("disable_clear_route_cache cannot be combined with route_cache_action %v",
			ep.GetRouteCacheAction())
	}
	for _, a := range slicesConcat(ep.GetRequestAttributes(), ep.GetResponseAttributes()) {
		if !attributePattern.MatchString(a) {
			add("attribute %q is not a valid attribute expression", a)
		}
	}
	mr := ep.GetMutationRules()
	for _, re := range []string{mr.GetAllowExpression().GetRegex(), mr.GetDisallowExpression().GetRegex()} {
		if _, err := regexp.Compile(re); err != nil {
			add("mutation_rules regex %q: %w", re, err)
		}
	}
	if gs != nil {
		if err := c.checkHTTP2Cluster(gs.GetEnvoyGrpc().GetClusterName()); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// checkHTTP2Cluster reports whether the named cluster exists and speaks HTTP/2, as Envoy's
// gRPC client requires.
func (c *checker) checkHTTP2Cluster(name string) error {
	if name == "" {
		return nil // google_grpc needs no cluster
	}
	cl := c.clusters[name]
	if cl == nil {
		return fmt.Errorf("envoy_grpc cluster %q does not exist", name)
	}
	//lint:ignore SA1019 Envoy still honours the legacy http2_protocol_options field
	if cl.GetHttp2ProtocolOptions() != nil {
		return nil
	}
	opts := &v3httppb.HttpProtocolOptions{}
	a := cl.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
	if a == nil || a.UnmarshalTo(opts) != nil ||
		opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		return fmt.Errorf("envoy_grpc cluster %q must speak HTTP/2 "+
			"(HttpProtocolOptions.explicit_http_config.http2_protocol_options)", name)
	}
	return nil
}

func (c *checker) checkRoutes(rdsRefs map[string]bool) {
	seen := map[string]bool{}
	for _, rc := range c.r.Routes {
		name := rc.GetName()
		if seen[name] {
			c.errorf("route configuration %q is defined twice", name)
		}
		seen[name] = true
		if !rdsRefs[name] {
			c.errorf("route configuration %q is referenced by no listener", name)
		}
		c.checkRouteConfig(rc)
	}
	for _, name := range slices.Sorted(maps.Keys(rdsRefs)) {
		if !seen[name] {
			c.errorf("route configuration %q is referenced but not defined", name)
		}
	}
}

func (c *checker) checkRouteConfig(rc *v3routepb.RouteConfiguration) {
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			where := fmt.Sprintf("route configuration %q, route %q", rc.GetName(), rt.GetName())
			a := rt.GetRoute()
			if a == nil {
				continue
			}
			if name := a.GetCluster(); name != "" && c.clusters[name] == nil {
				c.errorf("%s: cluster %q does not exist", where, name)
			}
			if wc := a.GetWeightedClusters(); wc != nil {
				c.checkWeightedClusters(where, wc)
			}
		}
	}
}

func (c *checker) checkWeightedClusters(where string, wc *v3routepb.WeightedCluster) {
	var sum uint64
	for _, cw := range wc.GetClusters() {
		sum += uint64(cw.GetWeight().GetValue())
		if c.clusters[cw.GetName()] == nil {
			c.errorf("%s: weighted cluster %q does not exist", where, cw.GetName())
		}
	}
	if sum == 0 || sum > math.MaxUint32 {
		c.errorf("%s: weighted cluster sum %d must be in 1..%d", where, sum, uint32(math.MaxUint32))
	}
}

func (c *checker) checkEndpoints() {
	edsNames := map[string]bool{}
	for _, cl := range c.r.Clusters {
		if cl.GetType() != v3clusterpb.Cluster_EDS {
			continue
		}
		if cl.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			c.errorf("cluster %q: EDS must be fetched over ADS", cl.GetName())
		}
		name := cl.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = cl.GetName()
		}
		edsNames[name] = true
	}
	seen := map[string]bool{}
	for _, cla := range c.r.Endpoints {
		name := cla.GetClusterName()
		if seen[name] {
			c.errorf("endpoints %q are defined twice", name)
		}
		seen[name] = true
		if !edsNames[name] {
			c.errorf("endpoints %q belong to no EDS cluster", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(edsNames)) {
		if !seen[name] {
			c.errorf("EDS cluster %q has no endpoints", name)
		}
	}
}
