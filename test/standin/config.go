package standin

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3httppb "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	// defaultBufferLimit is the listener per_connection_buffer_limit_bytes default (§3.1).
	defaultBufferLimit = 1 << 20
	// defaultRouteTimeout is the route timeout default (§3.2).
	defaultRouteTimeout = 15 * time.Second
	// httpProtocolOptionsKey names the cluster extension protocol options that select h2.
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

	routerTypeURL  = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	extProcTypeURL = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
	codecTypeURL   = "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
)

// listenerConfig is a compiled LDS Listener.
type listenerConfig struct {
	name        string
	address     string
	bufferLimit uint64
	hcm         *hcmConfig
}

// hcmConfig is a compiled HttpConnectionManager.
type hcmConfig struct {
	rdsName     string
	inlineRoute *routeConfig
	filters     []*extProcConfig // ext_proc filters in decode order; the router is implicit
}

// routeConfig is a compiled RouteConfiguration.
type routeConfig struct {
	name   string
	vhosts []*virtualHost
}

type virtualHost struct {
	name    string
	domains []string
	routes  []*route
}

type route struct {
	name          string
	prefix        string
	path          string
	hasPath       bool
	headers       []*v3routepb.HeaderMatcher
	cluster       string
	weighted      []weightedCluster
	prefixRewrite string
	regexRewrite  *regexp.Regexp // regex_rewrite pattern; Envoy's RE2 and Go's regexp agree
	regexSubst    string
	hostRewrite   string
	addHeaders    []headerOption // request_headers_to_add, applied by the router
	removeHeaders []string       // request_headers_to_remove, applied before addHeaders
	timeout       time.Duration
	retry         *retryPolicy
	bufferLimit   uint64 // request_body_buffer_limit of the route, else of the vhost; 0 = unset
}

// headerOption is one route-level request header to add. Route header options are plain
// Envoy config (HeaderValueOption), where the value is read from `value`.
type headerOption struct {
	key, value string
	appnd      bool
}

type weightedCluster struct {
	name   string
	weight uint32
}

type retryPolicy struct {
	on            map[string]bool
	numRetries    int
	statusCodes   map[int]bool
	previousHosts bool
	// previousPriorities is the previous_priorities retry priority: a retry goes to a
	// priority not tried yet, and to all again once every one was tried.
	previousPriorities bool
	resetHeaders       []string      // rate_limited_retry_back_off SECONDS headers
	resetMax           time.Duration // rate_limited_retry_back_off max_interval
}

// clusterConfig is a compiled CDS Cluster.
type clusterConfig struct {
	name    string
	eds     bool
	edsName string // service_name or the cluster name
	http2   bool
	// localityWeighted reports whether locality weights are honoured (§5.5).
	localityWeighted bool
	inline           *v3clusterpb.Cluster // for STATIC/STRICT_DNS load_assignment
	health           *healthConfig        // active TCP health check; nil = none
	outlier          *outlierConfig       // outlier detection; nil = none
	// upstreamFilters are the cluster's upstream ext_proc filters, run on every attempt
	// before the upstream codec (HttpProtocolOptions.http_filters).
	upstreamFilters []*extProcConfig
}

func compileCluster(c *v3clusterpb.Cluster) (*clusterConfig, error) {
	cc := &clusterConfig{name: c.GetName(), edsName: c.GetName()}
	switch c.GetType() {
	case v3clusterpb.Cluster_EDS:
		cc.eds = true
		if sn := c.GetEdsClusterConfig().GetServiceName(); sn != "" {
			cc.edsName = sn
		}
	case v3clusterpb.Cluster_STATIC, v3clusterpb.Cluster_STRICT_DNS, v3clusterpb.Cluster_LOGICAL_DNS:
		if c.GetLoadAssignment() == nil {
			return nil, fmt.Errorf("cluster %q: no load_assignment", c.GetName())
		}
		cc.inline = c
	default:
		return nil, fmt.Errorf("cluster %q: unsupported discovery type %v", c.GetName(), c.GetType())
	}
	if any := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; any != nil {
		var po v3httppb.HttpProtocolOptions
		if err := any.UnmarshalTo(&po); err != nil {
			return nil, fmt.Errorf("cluster %q: protocol options: %w", c.GetName(), err)
		}
		cc.http2 = po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
		filters, err := compileUpstreamFilters(po.GetHttpFilters())
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		cc.upstreamFilters = filters
	}
	cc.localityWeighted = c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	cc.health = compileHealth(c)
	cc.outlier = compileOutlier(c)
	return cc, nil
}

// compileUpstreamFilters compiles a cluster's upstream HTTP filters: ext_proc filters and
// the upstream codec, which must be last.
func compileUpstreamFilters(filters []*v3hcmpb.HttpFilter) ([]*extProcConfig, error) {
	var out []*extProcConfig
	for i, f := range filters {
		switch f.GetTypedConfig().GetTypeUrl() {
		case codecTypeURL:
			if i != len(filters)-1 {
				return nil, fmt.Errorf("upstream codec filter %q is not last", f.GetName())
			}
		case extProcTypeURL:
			var ep v3extprocpb.ExternalProcessor
			if err := f.GetTypedConfig().UnmarshalTo(&ep); err != nil {
				return nil, fmt.Errorf("upstream ext_proc %q: %w", f.GetName(), err)
			}
			c, err := compileExtProc(&ep)
			if err != nil {
				return nil, fmt.Errorf("upstream ext_proc %q: %w", f.GetName(), err)
			}
			out = append(out, c)
		default:
			return nil, fmt.Errorf("unsupported upstream http filter %q (%s)",
				f.GetName(), f.GetTypedConfig().GetTypeUrl())
		}
	}
	if len(filters) > 0 && filters[len(filters)-1].GetTypedConfig().GetTypeUrl() != codecTypeURL {
		return nil, errors.New("the last upstream http filter must be the upstream codec")
	}
	return out, nil
}

func compileListener(l *v3listenerpb.Listener) (*listenerConfig, error) {
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, fmt.Errorf("listener %q: no socket_address", l.GetName())
	}
	lc := &listenerConfig{
		name:        l.GetName(),
		address:     net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
		bufferLimit: defaultBufferLimit,
	}
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		lc.bufferLimit = uint64(v.GetValue())
	}
	chains := l.GetFilterChains()
	if len(chains) != 1 || len(chains[0].GetFilters()) != 1 {
		return nil, fmt.Errorf("listener %q: want exactly one filter chain with one filter", l.GetName())
	}
	var hcm v3hcmpb.HttpConnectionManager
	if err := unmarshalTyped(chains[0].GetFilters()[0].GetTypedConfig(), &hcm); err != nil {
		return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
	}
	h, err := compileHCM(&hcm)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
	}
	lc.hcm = h
	return lc, nil
}

func unmarshalTyped(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return errors.New("missing typed_config")
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("typed_config %s: %w", a.GetTypeUrl(), err)
	}
	return nil
}

func compileHCM(hcm *v3hcmpb.HttpConnectionManager) (*hcmConfig, error) {
	h := &hcmConfig{}
	switch {
	case hcm.GetRds() != nil:
		h.rdsName = hcm.GetRds().GetRouteConfigName()
	case hcm.GetRouteConfig() != nil:
		rc, err := compileRouteConfig(hcm.GetRouteConfig())
		if err != nil {
			return nil, err
		}
		h.inlineRoute = rc
	default:
		return nil, errors.New("hcm: neither rds nor route_config")
	}
	filters := hcm.GetHttpFilters()
	for i, f := range filters {
		switch f.GetTypedConfig().GetTypeUrl() {
		case routerTypeURL:
			if i != len(filters)-1 {
				return nil, fmt.Errorf("hcm: router filter %q is not last", f.GetName())
			}
			if err := f.GetTypedConfig().UnmarshalTo(&v3routerpb.Router{}); err != nil {
				return nil, fmt.Errorf("hcm: router: %w", err)
			}
		case extProcTypeURL:
			var ep v3extprocpb.ExternalProcessor
			if err := f.GetTypedConfig().UnmarshalTo(&ep); err != nil {
				return nil, fmt.Errorf("hcm: ext_proc %q: %w", f.GetName(), err)
			}
			c, err := compileExtProc(&ep)
			if err != nil {
				return nil, fmt.Errorf("hcm: ext_proc %q: %w", f.GetName(), err)
			}
			h.filters = append(h.filters, c)
		default:
			return nil, fmt.Errorf("hcm: unsupported http filter %q (%s)",
				f.GetName(), f.GetTypedConfig().GetTypeUrl())
		}
	}
	if len(filters) == 0 || filters[len(filters)-1].GetTypedConfig().GetTypeUrl() != routerTypeURL {
		return nil, errors.New("hcm: last http filter must be the router")
	}
	return h, nil
}

func compileRouteConfig(rc *v3routepb.RouteConfiguration) (*routeConfig, error) {
	out := &routeConfig{name: rc.GetName()}
	for _, vh := range rc.GetVirtualHosts() {
		v := &virtualHost{name: vh.GetName(), domains: vh.GetDomains()}
		for _, r := range vh.GetRoutes() {
			cr, err := compileRoute(r, vh)
			if err != nil {
				return nil, fmt.Errorf("route config %q: vhost %q: %w", rc.GetName(), vh.GetName(), err)
			}
			v.routes = append(v.routes, cr)
		}
		out.vhosts = append(out.vhosts, v)
	}
	return out, nil
}

func compileRoute(r *v3routepb.Route, vh *v3routepb.VirtualHost) (*route, error) {
	m := r.GetMatch()
	out := &route{name: r.GetName(), headers: m.GetHeaders(), timeout: defaultRouteTimeout}
	switch m.GetPathSpecifier().(type) {
	case *v3routepb.RouteMatch_Prefix:
		out.prefix = m.GetPrefix()
	case *v3routepb.RouteMatch_Path:
		out.path, out.hasPath = m.GetPath(), true
	default:
		return nil, fmt.Errorf("route %q: only prefix and path matches are supported", r.GetName())
	}
	// §3.1: the route limit wins over the virtual host limit.
	if l := vh.GetRequestBodyBufferLimit(); l != nil {
		out.bufferLimit = l.GetValue()
	}
	if l := r.GetRequestBodyBufferLimit(); l != nil {
		out.bufferLimit = l.GetValue()
	}
	a := r.GetRoute()
	if a == nil {
		return nil, fmt.Errorf("route %q: only route actions are supported", r.GetName())
	}
	out.removeHeaders = r.GetRequestHeadersToRemove()
	for _, o := range r.GetRequestHeadersToAdd() {
		out.addHeaders = append(out.addHeaders, headerOption{
			key:   strings.ToLower(o.GetHeader().GetKey()),
			value: o.GetHeader().GetValue(),
			appnd: o.GetAppendAction() == v3corepb.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	return out, compileAction(out, a, vh)
}

func compileAction(out *route, a *v3routepb.RouteAction, vh *v3routepb.VirtualHost) error {
	switch a.GetClusterSpecifier().(type) {
	case *v3routepb.RouteAction_Cluster:
		out.cluster = a.GetCluster()
	case *v3routepb.RouteAction_WeightedClusters:
		for _, wc := range a.GetWeightedClusters().GetClusters() {
			out.weighted = append(out.weighted, weightedCluster{wc.GetName(), wc.GetWeight().GetValue()})
		}
	default:
		return fmt.Errorf("route %q: only cluster and weighted_clusters are supported", out.name)
	}
	out.prefixRewrite = a.GetPrefixRewrite()
	if rr := a.GetRegexRewrite(); rr != nil {
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			return fmt.Errorf("route %q: regex_rewrite: %w", out.name, err)
		}
		out.regexRewrite, out.regexSubst = re, rr.GetSubstitution()
	}
	out.hostRewrite = a.GetHostRewriteLiteral()
	if t := a.GetTimeout(); t != nil {
		out.timeout = t.AsDuration()
	}
	rp := a.GetRetryPolicy()
	if rp == nil {
		rp = vh.GetRetryPolicy()
	}
	if rp != nil {
		out.retry = compileRetry(rp)
	}
	return nil
}

func compileRetry(rp *v3routepb.RetryPolicy) *retryPolicy {
	p := &retryPolicy{on: map[string]bool{}, numRetries: 1, statusCodes: map[int]bool{}}
	for _, s := range strings.Split(rp.GetRetryOn(), ",") {
		p.on[strings.TrimSpace(s)] = true
	}
	if n := rp.GetNumRetries(); n != nil {
		p.numRetries = int(n.GetValue())
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		p.statusCodes[int(c)] = true
	}
	for _, hp := range rp.GetRetryHostPredicate() {
		if hp.GetName() == "envoy.retry_host_predicates.previous_hosts" ||
			strings.HasSuffix(hp.GetTypedConfig().GetTypeUrl(), "PreviousHostsPredicate") {
			p.previousHosts = true
		}
	}
	// TODO: only update_frequency 1 is emulated: every attempt's priority is excluded.
	if rpp := rp.GetRetryPriority(); rpp.GetName() == "envoy.retry_priorities.previous_priorities" ||
		strings.HasSuffix(rpp.GetTypedConfig().GetTypeUrl(), "PreviousPrioritiesConfig") {
		p.previousPriorities = true
	}
	compileResetHeaders(p, rp.GetRateLimitedRetryBackOff())
	return p
}
