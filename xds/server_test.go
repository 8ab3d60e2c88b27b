package xds

import (
	"context"
	"net"
	"testing"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
)

// startServer serves a new Server on a loopback port and returns it with its address.
func startServer(t *testing.T) (*Server, *prometheus.Registry, string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := NewServer(ServerOptions{Registerer: reg})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return s, reg, lis.Addr().String()
}

func allVersions(s *Server) map[string]string {
	out := map[string]string{}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType,
		resourcev3.ListenerType, resourcev3.RouteType} {
		out[typeLabel(typ)] = s.Version(typ)
	}
	return out
}

func TestPublishVersionsPerType(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	s := NewServer(ServerOptions{})
	cfg := loadExampleConfig(t)
	build := func(opts BuildOptions) *Resources {
		r, err := Build(cfg, opts)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	if err := s.Publish(ctx, build(BuildOptions{})); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	first := allVersions(s)

	// The same content again changes nothing.
	if err := s.Publish(ctx, build(BuildOptions{})); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	if diff := cmp.Diff(first, allVersions(s)); diff != "" {
		t.Errorf("versions after republishing equal content (-want +got):\n%s", diff)
	}

	// New endpoint weights move only EDS.
	weights := BuildOptions{EndpointWeights: map[string]map[string]uint32{
		"fake-openai": {"127.0.0.1:18081": 5},
	}}
	if err := s.Publish(ctx, build(weights)); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	second := allVersions(s)
	for typ, v := range second {
		changed := v != first[typ]
		if changed != (typ == "endpoint") {
			t.Errorf("%s version %q -> %q; only endpoint should change", typ, first[typ], v)
		}
	}

	// New cluster weights move only RDS.
	split := weights
	split.ClusterWeights = map[string]map[string]uint32{"gpt-4o-mini": {"fake-openai": 9}}
	if err := s.Publish(ctx, build(split)); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	for typ, v := range allVersions(s) {
		changed := v != second[typ]
		if changed != (typ == "route") {
			t.Errorf("%s version %q -> %q; only route should change", typ, second[typ], v)
		}
	}
}

func TestPublishRefusesInvalid(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	s := NewServer(ServerOptions{})
	good := buildExample(t, BuildOptions{})
	if err := s.Publish(ctx, good); err != nil {
		t.Fatalf("Publish(good) = %v", err)
	}
	before := allVersions(s)

	bad := buildExample(t, BuildOptions{AccessLog: true})
	mutateExtProc(t, bad, func(ep *v3extprocpb.ExternalProcessor) {
		ep.MessageTimeout = durationpb.New(4000e9)
	})
	if err := s.Publish(ctx, bad); err == nil {
		t.Fatalf("Publish(bad) = nil, want an error")
	}
	if diff := cmp.Diff(before, allVersions(s)); diff != "" {
		t.Errorf("versions changed after a refused Publish (-want +got):\n%s", diff)
	}
	if err := s.Publish(ctx, nil); err == nil {
		t.Errorf("Publish(nil) = nil, want an error")
	}
}

// adsClient is a hand-driven ADS stream, able to NACK.
type adsClient struct {
	t      *testing.T
	stream v3discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

func newADSClient(ctx context.Context, t *testing.T, addr string) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	st, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &adsClient{t: t, stream: st}
}

func (c *adsClient) send(req *v3discoverypb.DiscoveryRequest) {
	c.t.Helper()
	req.Node = &v3corepb.Node{Id: "test-envoy", UserAgentName: "envoy"}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("Send() = %v", err)
	}
}

func (c *adsClient) recv() *v3discoverypb.DiscoveryResponse {
	c.t.Helper()
	resp, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("Recv() = %v", err)
	}
	return resp
}

func TestNACKDoesNotLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	s, reg, addr := startServer(t)
	if err := s.Publish(ctx, buildExample(t, BuildOptions{})); err != nil {
		t.Fatal(err)
	}
	c := newADSClient(ctx, t, addr)

	// The client receives the clusters and rejects them.
	c.send(&v3discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ClusterType})
	resp := c.recv()
	if resp.GetTypeUrl() != resourcev3.ClusterType {
		t.Fatalf("first response type = %s, want clusters", resp.GetTypeUrl())
	}
	c.send(&v3discoverypb.DiscoveryRequest{
		TypeUrl:       resourcev3.ClusterType,
		ResponseNonce: resp.GetNonce(),
		ErrorDetail:   &statuspb.Status{Code: 3, Message: "test rejects clusters"},
	})

	// A resend would be queued on the stream before the answer to this next request, which
	// therefore must be the listeners.
	c.send(&v3discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ListenerType})
	if got := c.recv().GetTypeUrl(); got != resourcev3.ListenerType {
		t.Fatalf("response after a NACK has type %s, want listeners (no resend of the rejected clusters)", got)
	}
	if got := testutil.ToFloat64(s.metrics.nacks.WithLabelValues("cluster")); got != 1 {
		t.Errorf("phogate_xds_nacks_total{type=cluster} = %v, want 1", got)
	}

	// New cluster content reaches the client that NACKed.
	if err := s.Publish(ctx, buildExample(t, BuildOptions{LBPolicy: LeastRequest})); err != nil {
		t.Fatal(err)
	}
	next := c.recv()
	if next.GetTypeUrl() != resourcev3.ClusterType || next.GetVersionInfo() == resp.GetVersionInfo() {
		t.Errorf("after a new Publish got %s version %q, want clusters with a version other than %q",
			next.GetTypeUrl(), next.GetVersionInfo(), resp.GetVersionInfo())
	}

	if n, err := testutil.GatherAndCount(reg, "phogate_xds_pushes_total"); err != nil || n == 0 {
		t.Errorf("phogate_xds_pushes_total series = %d, %v; want some", n, err)
	}
	if got := testutil.ToFloat64(s.metrics.connected); got != 1 {
		t.Errorf("phogate_xds_connected_clients = %v, want 1", got)
	}
}
