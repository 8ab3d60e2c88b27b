package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3httppb "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// defaultTestTimeout bounds every test context.
const defaultTestTimeout = 20 * time.Second

const (
	nodeID       = "standin-test"
	listenerName = "main"
	routeName    = "routes"
	procCluster  = "extproc"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

func serveGRPC(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// fakeProc is a scripted ext_proc server: handle answers each message with zero or more
// replies (zero lets the message time out, two make a spurious one) or ends the stream.
type fakeProc struct {
	v3procservicepb.UnimplementedExternalProcessorServer
	handle func(ctx context.Context, req *v3procservicepb.ProcessingRequest) (
		[]*v3procservicepb.ProcessingResponse, error)

	mu      sync.Mutex
	streams [][]*v3procservicepb.ProcessingRequest
}

func (fp *fakeProc) Process(st v3procservicepb.ExternalProcessor_ProcessServer) error {
	fp.mu.Lock()
	idx := len(fp.streams)
	fp.streams = append(fp.streams, nil)
	fp.mu.Unlock()
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		fp.mu.Lock()
		fp.streams[idx] = append(fp.streams[idx], req)
		fp.mu.Unlock()
		h := fp.handle
		if h == nil {
			h = continueAll
		}
		out, err := h(st.Context(), req)
		if errors.Is(err, errCloseOK) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, r := range out {
			if err := st.Send(r); err != nil {
				return nil
			}
		}
	}
}

// errCloseOK makes the fake end the stream with status OK.
var errCloseOK = errors.New("close with OK")

func registerProc(fp *fakeProc) func(*grpc.Server) {
	return func(s *grpc.Server) { v3procservicepb.RegisterExternalProcessorServer(s, fp) }
}

// messages returns what the proxy sent on stream i.
func (fp *fakeProc) messages(i int) []*v3procservicepb.ProcessingRequest {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if i >= len(fp.streams) {
		return nil
	}
	return append([]*v3procservicepb.ProcessingRequest(nil), fp.streams[i]...)
}

func continueAll(_ context.Context, req *v3procservicepb.ProcessingRequest,
) ([]*v3procservicepb.ProcessingResponse, error) {
	return []*v3procservicepb.ProcessingResponse{continueFor(req, nil)}, nil
}

// continueFor builds the matching CONTINUE reply for req, with an optional CommonResponse.
func continueFor(req *v3procservicepb.ProcessingRequest, cr *v3procservicepb.CommonResponse,
) *v3procservicepb.ProcessingResponse {
	hr := &v3procservicepb.HeadersResponse{Response: cr}
	br := &v3procservicepb.BodyResponse{Response: cr}
	var out v3procservicepb.ProcessingResponse
	switch req.GetRequest().(type) {
	case *v3procservicepb.ProcessingRequest_RequestHeaders:
		out.Response = &v3procservicepb.ProcessingResponse_RequestHeaders{RequestHeaders: hr}
	case *v3procservicepb.ProcessingRequest_ResponseHeaders:
		out.Response = &v3procservicepb.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}
	case *v3procservicepb.ProcessingRequest_RequestBody:
		out.Response = &v3procservicepb.ProcessingResponse_RequestBody{RequestBody: br}
	default:
		out.Response = &v3procservicepb.ProcessingResponse_ResponseBody{ResponseBody: br}
	}
	return &out
}

func setHeader(key, raw string) *v3corepb.HeaderValueOption {
	return &v3corepb.HeaderValueOption{Header: &v3corepb.HeaderValue{Key: key, RawValue: []byte(raw)}}
}

// upstream is an httptest backend that names itself in x-served-by.
type upstream struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newUpstream(t *testing.T, name string, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		w.Header().Set("X-Served-By", name)
		if h != nil {
			h(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", name, r.URL.Path, body)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) addr() string { return u.srv.Listener.Addr().String() }

// topology describes the resources the test xDS server publishes.
type topology struct {
	extProc     *v3extprocpb.ExternalProcessor // nil: no ext_proc filter
	procAddr    string
	routes      []*v3routepb.Route
	clusters    map[string][]endpoint // EDS clusters
	localities  bool                  // set locality_weighted_lb_config
	bufferLimit uint32
}

type endpoint struct {
	addr           string
	weight         uint32 // endpoint load_balancing_weight; 0 = unset
	localityWeight uint32
	locality       string
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatalf("anypb.New: %v", err)
	}
	return a
}

func socketAddress(t *testing.T, hostport string) *v3corepb.Address {
	t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("split %q: %v", hostport, err)
	}
	p, _ := strconv.Atoi(port)
	return &v3corepb.Address{Address: &v3corepb.Address_SocketAddress{SocketAddress: &v3corepb.SocketAddress{
		Address: host, PortSpecifier: &v3corepb.SocketAddress_PortValue{PortValue: uint32(p)}}}}
}

func (tp *topology) resources(t *testing.T) map[resource.Type][]types.Resource {
	t.Helper()
	out := map[resource.Type][]types.Resource{
		resource.ListenerType: {tp.listener(t)},
		resource.RouteType: {&v3routepb.RouteConfiguration{Name: routeName, VirtualHosts: []*v3routepb.VirtualHost{
			{Name: "all", Domains: []string{"*"}, Routes: tp.routes}}}},
	}
	for name, eps := range tp.clusters {
		c := &v3clusterpb.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &v3clusterpb.Cluster_Type{Type: v3clusterpb.Cluster_EDS},
			EdsClusterConfig: &v3clusterpb.Cluster_EdsClusterConfig{EdsConfig: &v3corepb.ConfigSource{
				ConfigSourceSpecifier: &v3corepb.ConfigSource_Ads{Ads: &v3corepb.AggregatedConfigSource{}}}},
		}
		if tp.localities {
			lw := &v3clusterpb.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
				LocalityWeightedLbConfig: &v3clusterpb.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}
			c.CommonLbConfig = &v3clusterpb.Cluster_CommonLbConfig{LocalityConfigSpecifier: lw}
		}
		out[resource.ClusterType] = append(out[resource.ClusterType], c)
		out[resource.EndpointType] = append(out[resource.EndpointType], tp.loadAssignment(t, name, eps))
	}
	if tp.extProc != nil {
		out[resource.ClusterType] = append(out[resource.ClusterType], tp.procClusterResource(t))
	}
	return out
}

func (tp *topology) loadAssignment(t *testing.T, name string, eps []endpoint) *v3endpointpb.ClusterLoadAssignment {
	t.Helper()
	byLocality := map[string]*v3endpointpb.LocalityLbEndpoints{}
	cla := &v3endpointpb.ClusterLoadAssignment{ClusterName: name}
	for _, e := range eps {
		le := byLocality[e.locality]
		if le == nil {
			le = &v3endpointpb.LocalityLbEndpoints{Locality: &v3corepb.Locality{Zone: e.locality},
				LoadBalancingWeight: wrapperspb.UInt32(max(e.localityWeight, 1))}
			byLocality[e.locality] = le
			cla.Endpoints = append(cla.Endpoints, le)
		}
		lb := &v3endpointpb.LbEndpoint{HostIdentifier: &v3endpointpb.LbEndpoint_Endpoint{
			Endpoint: &v3endpointpb.Endpoint{Address: socketAddress(t, e.addr)}}}
		if e.weight > 0 {
			lb.LoadBalancingWeight = wrapperspb.UInt32(e.weight)
		}
		le.LbEndpoints = append(le.LbEndpoints, lb)
	}
	return cla
}

func (tp *topology) procClusterResource(t *testing.T) *v3clusterpb.Cluster {
	t.Helper()
	po := &v3httppb.HttpProtocolOptions{UpstreamProtocolOptions: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
				Http2ProtocolOptions: &v3corepb.Http2ProtocolOptions{}}}}}
	return &v3clusterpb.Cluster{
		Name:                 procCluster,
		ClusterDiscoveryType: &v3clusterpb.Cluster_Type{Type: v3clusterpb.Cluster_STATIC},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, po)},
		LoadAssignment: tp.loadAssignment(t, procCluster, []endpoint{{addr: tp.procAddr}}),
	}
}

func (tp *topology) listener(t *testing.T) *v3listenerpb.Listener {
	t.Helper()
	var filters []*v3hcmpb.HttpFilter
	if tp.extProc != nil {
		filters = append(filters, &v3hcmpb.HttpFilter{Name: "envoy.filters.http.ext_proc",
			ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(t, tp.extProc)}})
	}
	filters = append(filters, &v3hcmpb.HttpFilter{Name: "envoy.filters.http.router",
		ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &v3routerpb.Router{})}})
	hcm := &v3hcmpb.HttpConnectionManager{
		StatPrefix: "ingress",
		RouteSpecifier: &v3hcmpb.HttpConnectionManager_Rds{Rds: &v3hcmpb.Rds{RouteConfigName: routeName,
			ConfigSource: &v3corepb.ConfigSource{ResourceApiVersion: v3corepb.ApiVersion_V3,
				ConfigSourceSpecifier: &v3corepb.ConfigSource_Ads{Ads: &v3corepb.AggregatedConfigSource{}}}}},
		HttpFilters: filters,
	}
	l := &v3listenerpb.Listener{
		Name:    listenerName,
		Address: socketAddress(t, "127.0.0.1:0"),
		FilterChains: []*v3listenerpb.FilterChain{{Filters: []*v3listenerpb.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &v3listenerpb.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)}}}}},
	}
	if tp.bufferLimit > 0 {
		l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(tp.bufferLimit)
	}
	return l
}

// env is one running stand-in with its xDS server.
type env struct {
	t       *testing.T
	cache   cache.SnapshotCache
	version int
	last    *topology
	proxy   *Proxy
	url     string
}

func newEnv(t *testing.T, tp *topology) *env {
	t.Helper()
	ctx := testContext(t)
	e := &env{t: t, cache: cache.NewSnapshotCache(true, cache.IDHash{}, nil)}
	srv := xdsserver.NewServer(context.WithoutCancel(ctx), e.cache, nil)
	addr := serveGRPC(t, func(s *grpc.Server) { v3discoverypb.RegisterAggregatedDiscoveryServiceServer(s, srv) })
	e.push(tp)
	p, err := Start(ctx, Options{XDSAddress: addr, NodeID: nodeID, Cluster: "test"})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	la, ok := p.ListenerAddr(listenerName)
	if !ok {
		t.Fatalf("ListenerAddr(%q) not found", listenerName)
	}
	e.proxy, e.url = p, "http://"+la
	return e
}

// push publishes tp under a new version.
func (e *env) push(tp *topology) {
	e.t.Helper()
	e.last = tp
	e.publish(tp.resources(e.t))
}

// pushRaw publishes the last topology with its EDS resources replaced by cla.
func (e *env) pushRaw(cla *v3endpointpb.ClusterLoadAssignment) {
	e.t.Helper()
	res := e.last.resources(e.t)
	res[resource.EndpointType] = []types.Resource{cla}
	e.publish(res)
}

func (e *env) publish(res map[resource.Type][]types.Resource) {
	e.t.Helper()
	e.version++
	snap, err := cache.NewSnapshot(strconv.Itoa(e.version), res)
	if err != nil {
		e.t.Fatalf("NewSnapshot: %v", err)
	}
	if err := e.cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		e.t.Fatalf("SetSnapshot: %v", err)
	}
}

// waitFor polls cond (the proxy applies xDS asynchronously) until it holds or ctx ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := testContext(t)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

type result struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(method, path, body string, hdr map[string]string) result {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testContext(e.t), method, e.url+path, rd)
	if err != nil {
		e.t.Fatalf("NewRequest: %v", err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("reading body: %v", err)
	}
	return result{resp.StatusCode, resp.Header, string(b)}
}

func prefixRoute(prefix, cluster string) *v3routepb.Route {
	return &v3routepb.Route{
		Match: &v3routepb.RouteMatch{PathSpecifier: &v3routepb.RouteMatch_Prefix{Prefix: prefix}},
		Action: &v3routepb.Route_Route{Route: &v3routepb.RouteAction{
			ClusterSpecifier: &v3routepb.RouteAction_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(0)}},
	}
}

func procConfig(mode *v3extprocpb.ProcessingMode) *v3extprocpb.ExternalProcessor {
	return &v3extprocpb.ExternalProcessor{
		GrpcService: &v3corepb.GrpcService{TargetSpecifier: &v3corepb.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &v3corepb.GrpcService_EnvoyGrpc{ClusterName: procCluster}}},
		ProcessingMode: mode,
		MessageTimeout: durationpb.New(5 * time.Second),
	}
}

// procEnv starts an upstream "a", a scripted ext_proc server and the stand-in.
func procEnv(t *testing.T, ep *v3extprocpb.ExternalProcessor, fp *fakeProc,
	upstreamHandler http.HandlerFunc) (*env, *topology) {
	t.Helper()
	ua := newUpstream(t, "a", upstreamHandler)
	tp := &topology{
		extProc:  ep,
		procAddr: serveGRPC(t, func(s *grpc.Server) { v3procservicepb.RegisterExternalProcessorServer(s, fp) }),
		routes:   []*v3routepb.Route{prefixRoute("/", "a")},
		clusters: map[string][]endpoint{"a": {{addr: ua.addr()}}},
	}
	return newEnv(t, tp), tp
}
