package standin

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// host is one upstream endpoint.
type host struct {
	addr     string
	weight   float64
	priority uint32
	metadata *v3corepb.Metadata // the endpoint's metadata (LbEndpoint.metadata)
	// healthy is the EDS health_status of the host (and a weight above 0).
	healthy atomic.Bool
	// health is the host's active health check and outlier state (health.go); nil when the
	// cluster was built without a registry.
	health *hostHealth
}

// upstreamCluster is a cluster with its endpoints and load balancer state.
type upstreamCluster struct {
	cfg   *clusterConfig
	hosts []*host

	mu      sync.Mutex
	current map[*host]float64 // smooth weighted round-robin state
}

func newUpstreamCluster(cfg *clusterConfig, cla *v3endpointpb.ClusterLoadAssignment) *upstreamCluster {
	c := &upstreamCluster{cfg: cfg, current: map[*host]float64{}}
	for _, le := range cla.GetEndpoints() {
		c.addLocality(le)
	}
	return c
}

// addLocality adds the endpoints of one locality. Endpoint weight defaults to 1. With
// locality_weighted_lb_config, a host's share is its locality's share times its share inside
// the locality, as Envoy's two-level pick gives; without it locality weights are ignored (§5.5).
func (c *upstreamCluster) addLocality(le *v3endpointpb.LocalityLbEndpoints) {
	var sum float64
	for _, e := range le.GetLbEndpoints() {
		sum += endpointWeight(e)
	}
	for _, e := range le.GetLbEndpoints() {
		sa := e.GetEndpoint().GetAddress().GetSocketAddress()
		if sa == nil {
			continue
		}
		h := &host{
			addr:     net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))),
			weight:   endpointWeight(e),
			priority: le.GetPriority(),
			metadata: e.GetMetadata(),
		}
		if c.cfg.localityWeighted {
			h.weight = float64(le.GetLoadBalancingWeight().GetValue()) * h.weight / sum
		}
		switch e.GetHealthStatus() {
		case v3corepb.HealthStatus_UNKNOWN, v3corepb.HealthStatus_HEALTHY:
			h.healthy.Store(h.weight > 0)
		}
		c.hosts = append(c.hosts, h)
	}
}

func endpointWeight(e *v3endpointpb.LbEndpoint) float64 {
	if w := e.GetLoadBalancingWeight(); w != nil {
		return float64(w.GetValue())
	}
	return 1
}

// pick chooses a healthy host by smooth weighted round robin in the lowest priority that has
// a healthy host. Priorities in skip are passed over while another priority has a healthy
// host (retry_priority previous_priorities). Hosts in exclude are skipped when another
// candidate exists (retry_host_predicate previous_hosts). It returns nil when no host is
// healthy.
//
// TODO: priority spill-over by overprovisioning factor is not emulated; traffic moves to the
// next priority only when a priority has no healthy host at all.
func (c *upstreamCluster) pick(exclude map[string]bool, skip map[uint32]bool) *host {
	cands := c.candidates(skip)
	if len(cands) == 0 && len(skip) > 0 {
		// Every priority was tried: previous_priorities starts over.
		cands = c.candidates(nil)
	}
	if len(cands) == 0 {
		return nil
	}
	if fresh := filterHosts(cands, exclude); len(fresh) > 0 {
		cands = fresh
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var total float64
	var best *host
	for _, h := range cands {
		c.current[h] += h.weight
		total += h.weight
		if best == nil || c.current[h] > c.current[best] {
			best = h
		}
	}
	c.current[best] -= total
	return best
}

func (c *upstreamCluster) candidates(skip map[uint32]bool) []*host {
	var out []*host
	var prio uint32
	now := time.Now()
	for _, h := range c.hosts {
		if !h.healthy.Load() || h.health != nil && !h.health.usable(now) || skip[h.priority] {
			continue
		}
		switch {
		case len(out) == 0 || h.priority < prio:
			out, prio = []*host{h}, h.priority
		case h.priority == prio:
			out = append(out, h)
		}
	}
	return out
}

func filterHosts(hosts []*host, exclude map[string]bool) []*host {
	var out []*host
	for _, h := range hosts {
		if !exclude[h.addr] {
			out = append(out, h)
		}
	}
	return out
}

// newTransport returns an upstream HTTP transport: HTTP/1.1, or h2c (prior knowledge) for
// clusters with http2_protocol_options.
func newTransport(h2c bool) *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second}
	t := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}
	if h2c {
		var ps http.Protocols
		ps.SetUnencryptedHTTP2(true)
		t.Protocols = &ps
	}
	return t
}
