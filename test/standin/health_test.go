package standin

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// clusterEnv serves cluster "a" with the given hosts and route, then applies edit to the
// cluster and waits until the stand-in runs with it.
func clusterEnv(t *testing.T, r *v3routepb.Route, addrs []string, edit func(*v3clusterpb.Cluster),
	ready func(*upstreamCluster) bool) *env {
	t.Helper()
	var eps []endpoint
	for _, a := range addrs {
		eps = append(eps, endpoint{addr: a})
	}
	tp := &topology{routes: []*v3routepb.Route{r}, clusters: map[string][]endpoint{"a": eps}}
	e := newEnv(t, tp)
	res := tp.resources(t)
	edit(res[resource.ClusterType][0].(*v3clusterpb.Cluster))
	e.publish(res)
	waitFor(t, "the edited cluster", func() bool {
		uc := e.proxy.state.Load().upstreams["a"]
		return uc != nil && ready(uc)
	})
	return e
}

// Consecutive 5xx eject a host (§ outlier detection), so later requests avoid it.
func TestOutlierDetectionEjectsFailingHost(t *testing.T) {
	bad := newUpstream(t, "bad", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	good := newUpstream(t, "good", nil)
	e := clusterEnv(t, prefixRoute("/", "a"), []string{bad.addr(), good.addr()},
		func(c *v3clusterpb.Cluster) {
			c.OutlierDetection = &v3clusterpb.OutlierDetection{
				Consecutive_5Xx:    wrapperspb.UInt32(2),
				BaseEjectionTime:   durationpb.New(time.Minute),
				MaxEjectionPercent: wrapperspb.UInt32(50),
			}
		}, func(uc *upstreamCluster) bool { return uc.cfg.outlier != nil })
	failed := 0
	for range 12 {
		if res := e.do("GET", "/", "", nil); res.status != 200 {
			failed++
		}
	}
	if bad.hits.Load() != 2 || failed != 2 {
		t.Errorf("bad host served %d requests, %d failed; want 2 and 2, then ejection",
			bad.hits.Load(), failed)
	}
}

// An active TCP health check takes a host that refuses connections out of the rotation.
func TestActiveHealthCheckSkipsDeadHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	good := newUpstream(t, "good", nil)
	e := clusterEnv(t, prefixRoute("/", "a"), []string{dead, good.addr()},
		func(c *v3clusterpb.Cluster) {
			c.HealthChecks = []*v3corepb.HealthCheck{{
				Timeout: durationpb.New(time.Second), Interval: durationpb.New(20 * time.Millisecond),
				UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
				HealthChecker: &v3corepb.HealthCheck_TcpHealthCheck_{
					TcpHealthCheck: &v3corepb.HealthCheck_TcpHealthCheck{}},
			}}
		}, func(uc *upstreamCluster) bool {
			for _, h := range uc.hosts {
				if h.addr == dead && h.health != nil && !h.health.usable(time.Now()) {
					return true
				}
			}
			return false
		})
	for range 6 {
		if res := e.do("GET", "/", "", nil); res.status != 200 {
			t.Errorf("status %d, want 200 from the live host only", res.status)
		}
	}
	if good.hits.Load() != 6 {
		t.Errorf("live host served %d of 6", good.hits.Load())
	}
}

// A 429 with Retry-After is retried after the time it names, not the default back-off.
func TestRetryAfterIsHonoured(t *testing.T) {
	var calls atomic.Int64
	u := newUpstream(t, "u", func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			return
		}
		w.WriteHeader(200)
	})
	r := prefixRoute("/", "a")
	r.GetRoute().RetryPolicy = &v3routepb.RetryPolicy{
		RetryOn: "retriable-status-codes", NumRetries: wrapperspb.UInt32(1),
		RetriableStatusCodes: []uint32{429},
		RateLimitedRetryBackOff: &v3routepb.RetryPolicy_RateLimitedRetryBackOff{
			ResetHeaders: []*v3routepb.RetryPolicy_ResetHeader{{Name: "retry-after"}},
			MaxInterval:  durationpb.New(5 * time.Second),
		},
	}
	e := clusterEnv(t, r, []string{u.addr()}, func(*v3clusterpb.Cluster) {},
		func(*upstreamCluster) bool { return true })
	start := time.Now()
	res := e.do("GET", "/", "", nil)
	waited := time.Since(start)
	if res.status != 200 || calls.Load() != 2 {
		t.Fatalf("status %d after %d calls, want 200 after a retry", res.status, calls.Load())
	}
	// Only a lower bound: the default back-off (at most 25 ms) would retry far sooner.
	if waited < 900*time.Millisecond {
		t.Errorf("retried after %v, want the 1 s that Retry-After named", waited)
	}
}
