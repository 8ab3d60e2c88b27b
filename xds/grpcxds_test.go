package xds

import (
	"context"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"

	"github.com/phochat/phogate/internal/config"
)

// startBackend serves the gRPC health service on a loopback port.
func startBackend(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// split sends n calls with the model header and counts them by backend address.
func split(ctx context.Context, t *testing.T, c healthpb.HealthClient, n int) map[string]int {
	t.Helper()
	ctx = metadata.AppendToOutgoingContext(ctx, HeaderModel, "m")
	got := map[string]int{}
	for range n {
		var p peer.Peer
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("Check() = %v", err)
		}
		got[p.Addr.String()]++
	}
	return got
}

func TestGRPCClientFollowsWeightedClusters(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	a, b := startBackend(t), startBackend(t)
	cfg, err := config.Parse(fmt.Appendf(nil, `
providers:
  - name: a
    base_url: http://%[1]s/v1
    endpoints: [%[1]s]
    models: [m]
  - name: b
    base_url: http://%[2]s/v1
    endpoints: [%[2]s]
    models: [m]
models:
  - name: m
`, a, b))
	if err != nil {
		t.Fatal(err)
	}
	s, _, addr := startServer(t)
	publish := func(wa, wb uint32) {
		t.Helper()
		r, err := Build(cfg, BuildOptions{
			GRPCListenerName: "phogate-grpc",
			ClusterWeights:   map[string]map[string]uint32{"m": {"a": wa, "b": wb}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Publish(ctx, r); err != nil {
			t.Fatalf("Publish() = %v", err)
		}
	}
	publish(80, 20)

	client := grpcXDSClient(t, addr, "grpc-test-client")

	// With 1000 calls a share of 0.8 has a standard deviation of about 1.3 points, so
	// ±8 points is more than five of them.
	const n, tolerance = 1000, 80
	got := split(ctx, t, client, n)
	if got[a] < 800-tolerance || got[a] > 800+tolerance || got[a]+got[b] != n {
		t.Errorf("split at 80/20 = %v, want about 800 to %s and 200 to %s", got, a, b)
	}

	// After new weights the client moves once it has applied the route update; wait for
	// that event, then measure.
	publish(20, 80)
	for ctx.Err() == nil {
		if got := split(ctx, t, client, 100); got[b] > got[a] {
			break
		}
	}
	got = split(ctx, t, client, n)
	if got[b] < 800-tolerance || got[b] > 800+tolerance || got[a]+got[b] != n {
		t.Errorf("split at 20/80 = %v, want about 200 to %s and 800 to %s", got, a, b)
	}
}

// grpcXDSClient returns a health client that reaches its backends through grpc-go's own xDS
// resolver, following the gRPC listener published by the server at addr as node nodeID.
func grpcXDSClient(t *testing.T, addr, nodeID string) healthpb.HealthClient {
	t.Helper()
	bootstrap := fmt.Appendf(nil, `{"xds_servers":[{"server_uri":%q,"channel_creds":[{"type":"insecure"}],
		"server_features":["xds_v3"]}],"node":{"id":%q}}`, addr, nodeID)
	res, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///phogate-grpc",
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(res))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}
