package standin

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3upstreamcodecpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/upstream_codec/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	v3prioritypb "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	v3httppb "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// providerAttr is the attribute that names the picked endpoint's provider.
const providerAttr = "xds.upstream_host_metadata.filter_metadata['phogate']['provider']"

// providerRewriter is an upstream processor: it routes each attempt to "/<provider>/x" and
// names the provider in a header, from the endpoint metadata attribute (§2.3).
func providerRewriter(_ context.Context, req *v3procservicepb.ProcessingRequest,
) ([]*v3procservicepb.ProcessingResponse, error) {
	p := req.GetAttributes()[attributesKey].GetFields()[providerAttr].GetStringValue()
	cr := &v3procservicepb.CommonResponse{HeaderMutation: &v3procservicepb.HeaderMutation{
		SetHeaders: []*v3corepb.HeaderValueOption{setHeader(":path", "/"+p+"/x"), setHeader("x-provider", p)},
	}}
	return []*v3procservicepb.ProcessingResponse{continueFor(req, cr)}, nil
}

// priorityEnv serves cluster "m" with host "bad" (503, provider a) at priority 0 and host
// "good" (provider b) at priority 1, behind an upstream ext_proc filter running fp. With
// previousPriorities the route's retry policy has the previous_priorities retry priority.
func priorityEnv(t *testing.T, fp *fakeProc, previousPriorities bool) (e *env, bad, good *upstream) {
	t.Helper()
	bad = newUpstream(t, "bad", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	good = newUpstream(t, "good", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.URL.Path, r.Header.Get("x-provider"))
	})
	r := prefixRoute("/", "m")
	rp := &v3routepb.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1)}
	if previousPriorities {
		rp.RetryPriority = &v3routepb.RetryPolicy_RetryPriority{
			Name: "envoy.retry_priorities.previous_priorities",
			ConfigType: &v3routepb.RetryPolicy_RetryPriority_TypedConfig{
				TypedConfig: mustAny(t, &v3prioritypb.PreviousPrioritiesConfig{UpdateFrequency: 1})},
		}
	}
	r.GetRoute().RetryPolicy = rp
	tp := &topology{
		procAddr: serveGRPC(t, func(s *grpc.Server) { v3procservicepb.RegisterExternalProcessorServer(s, fp) }),
		routes:   []*v3routepb.Route{r},
		clusters: map[string][]endpoint{"m": {{addr: bad.addr(), locality: "a"}, {addr: good.addr(), locality: "b"}}},
	}
	e = newEnv(t, tp)

	res := tp.resources(t)
	ep := procConfig(&v3extprocpb.ProcessingMode{
		RequestHeaderMode:  v3extprocpb.ProcessingMode_SEND,
		ResponseHeaderMode: v3extprocpb.ProcessingMode_SKIP,
	})
	ep.RequestAttributes = []string{providerAttr}
	// upstream_protocol_options is required (PGV).
	po := &v3httppb.HttpProtocolOptions{
		UpstreamProtocolOptions: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &v3httppb.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
					HttpProtocolOptions: &v3corepb.Http1ProtocolOptions{}}}},
		HttpFilters: []*v3hcmpb.HttpFilter{
			{Name: "envoy.filters.http.ext_proc",
				ConfigType: &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(t, ep)}},
			{Name: "envoy.filters.http.upstream_codec", ConfigType: &v3hcmpb.HttpFilter_TypedConfig{
				TypedConfig: mustAny(t, &v3upstreamcodecpb.UpstreamCodec{})}},
		}}
	for _, c := range res[resource.ClusterType] {
		c.(*v3clusterpb.Cluster).TypedExtensionProtocolOptions = map[string]*anypb.Any{
			httpProtocolOptionsKey: mustAny(t, po)}
	}
	res[resource.ClusterType] = append(res[resource.ClusterType], tp.procClusterResource(t))
	cla := res[resource.EndpointType][0].(*v3endpointpb.ClusterLoadAssignment)
	for i, le := range cla.GetEndpoints() {
		le.Priority = uint32(i)
		provider := map[string]string{"a": "a", "b": "b"}[le.GetLocality().GetZone()]
		le.LbEndpoints[0].Metadata = &v3corepb.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"phogate": {Fields: map[string]*structpb.Value{"provider": structpb.NewStringValue(provider)}}}}
	}
	res[resource.EndpointType] = []types.Resource{cla}
	e.publish(res)
	waitFor(t, "the upstream filter config", func() bool {
		uc := e.proxy.state.Load().upstreams["m"]

		return uc != nil && len(uc.cfg.upstreamFilters) == 1 && len(uc.hosts) == 2 && uc.hosts[1].priority == 1
	})
	return e, bad, good
}

// A retry with previous_priorities goes to the next priority, and the cluster's upstream
// filter runs once per attempt with the picked endpoint's metadata.
func TestUpstreamFilterRunsPerAttempt(t *testing.T) {
	fp := &fakeProc{handle: providerRewriter}
	e, bad, good := priorityEnv(t, fp, true)
	const n = 3
	for range n {
		res := e.do("POST", "/v1/chat", "{}", nil)
		if res.status != 200 || res.body != "/b/x b" {
			t.Errorf("answer %d %q, want 200 \"/b/x b\" (path and header set for provider b)", res.status, res.body)
		}
	}
	if bad.hits.Load() != n || good.hits.Load() != n {
		t.Errorf("hits bad %d, good %d; want each request on bad first, then good", bad.hits.Load(),
			good.hits.Load())
	}
	for i := range 2 * n {
		msgs := fp.messages(i)
		want := []string{"a", "b"}[i%2]
		if len(msgs) == 0 {
			t.Fatalf("upstream stream %d: no messages, want one per attempt", i)
		}
		if got := msgs[0].GetAttributes()[attributesKey].GetFields()[providerAttr].GetStringValue(); got != want {
			t.Errorf("upstream stream %d: provider attribute %q, want %q", i, got, want)
		}
	}
}

// Without a retry priority a retry stays in the lowest healthy priority.
func TestRetryWithoutPreviousPrioritiesStays(t *testing.T) {
	e, bad, good := priorityEnv(t, &fakeProc{handle: providerRewriter}, false)
	if res := e.do("POST", "/v1/chat", "{}", nil); res.status != 503 {
		t.Errorf("status %d, want 503 from the priority 0 host after its retry", res.status)
	}
	if bad.hits.Load() != 2 || good.hits.Load() != 0 {
		t.Errorf("hits bad %d, good %d; want 2 and 0", bad.hits.Load(), good.hits.Load())
	}
}
