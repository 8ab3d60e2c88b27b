package standin

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// healthConfig is a cluster's active TCP health check (the first of health_checks).
type healthConfig struct {
	interval, timeout            time.Duration
	unhealthyAfter, healthyAfter int
}

// outlierConfig is a cluster's outlier detection: consecutive 5xx and consecutive gateway
// failures eject a host for base_ejection_time times its ejection count.
type outlierConfig struct {
	consecutive5xx, consecutiveGateway int  // 0 = off
	enforce5xx, enforceGateway         bool // enforcing_* at 100 (Envoy default: 100 and 0)
	baseEjection                       time.Duration
	maxEjectionPercent                 int
}

func compileHealth(c *v3clusterpb.Cluster) *healthConfig {
	for _, hc := range c.GetHealthChecks() {
		if hc.GetTcpHealthCheck() == nil {
			continue // TODO: HTTP and gRPC health checks are not emulated; such hosts stay healthy.
		}
		return &healthConfig{
			interval:       hc.GetInterval().AsDuration(),
			timeout:        hc.GetTimeout().AsDuration(),
			unhealthyAfter: int(max(hc.GetUnhealthyThreshold().GetValue(), 1)),
			healthyAfter:   int(max(hc.GetHealthyThreshold().GetValue(), 1)),
		}
	}
	return nil
}

func compileOutlier(c *v3clusterpb.Cluster) *outlierConfig {
	od := c.GetOutlierDetection()
	if od == nil {
		return nil
	}
	// Envoy's defaults (outlier_detection.proto): 5 consecutive 5xx enforced at 100%,
	// 5 consecutive gateway failures enforced at 0%, 30s base ejection, 10% max ejected.
	oc := &outlierConfig{
		consecutive5xx: 5, consecutiveGateway: 5, enforce5xx: true,
		baseEjection: 30 * time.Second, maxEjectionPercent: 10,
	}
	if v := od.GetConsecutive_5Xx(); v != nil {
		oc.consecutive5xx = int(v.GetValue())
	}
	if v := od.GetConsecutiveGatewayFailure(); v != nil {
		oc.consecutiveGateway = int(v.GetValue())
	}
	if v := od.GetEnforcingConsecutive_5Xx(); v != nil {
		oc.enforce5xx = v.GetValue() >= 100
	}
	if v := od.GetEnforcingConsecutiveGatewayFailure(); v != nil {
		oc.enforceGateway = v.GetValue() >= 100
	}
	if v := od.GetBaseEjectionTime(); v != nil {
		oc.baseEjection = v.AsDuration()
	}
	if v := od.GetMaxEjectionPercent(); v != nil {
		oc.maxEjectionPercent = int(v.GetValue())
	}
	return oc
}

// hostHealth is the health of one host of one cluster. It outlives EDS updates, as Envoy
// keeps a host's health while its address stays in the cluster.
type hostHealth struct {
	mu             sync.Mutex
	activeFailed   bool // failed the active health check
	hcFails, hcOKs int
	consec5xx      int
	consecGateway  int
	ejections      int
	ejectedUntil   time.Time
	stop           context.CancelFunc // stops the running checker; nil when none runs
	checking       healthConfig       // the running checker's settings
}

// check makes the host's active health check follow hc: a checker starts when the cluster
// gains a health check, restarts when its settings change and stops when it goes away. The
// host's health state carries over. Callers hold the registry lock.
func (h *hostHealth) check(ctx context.Context, hc *healthConfig, addr string) {
	if h.stop != nil && hc != nil && h.checking == *hc {
		return
	}
	if h.stop != nil {
		h.stop()
		h.stop = nil
	}
	if hc == nil {
		return
	}
	cctx, cancel := context.WithCancel(ctx)
	h.stop, h.checking = cancel, *hc
	go runTCPCheck(cctx, hc, addr, h)
}

// usable reports whether the host passes its health check and is not ejected at now.
func (h *hostHealth) usable(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.activeFailed && !now.Before(h.ejectedUntil)
}

func (h *hostHealth) ejected(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Before(h.ejectedUntil)
}

// healthRegistry holds the health of every host by cluster and address, and runs the
// active health checks.
type healthRegistry struct {
	ctx context.Context

	mu    sync.Mutex
	hosts map[string]map[string]*hostHealth // cluster → address → health
}

func newHealthRegistry(ctx context.Context) *healthRegistry {
	return &healthRegistry{ctx: ctx, hosts: map[string]map[string]*hostHealth{}}
}

// sync attaches health to the hosts of a rebuilt cluster, starting a TCP checker for each
// new host and stopping those of removed hosts.
func (r *healthRegistry) sync(c *upstreamCluster) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.hosts[c.cfg.name]
	next := map[string]*hostHealth{}
	for _, h := range c.hosts {
		hh := prev[h.addr]
		if hh == nil {
			hh = &hostHealth{}
		}
		hh.check(r.ctx, c.cfg.health, h.addr)
		next[h.addr] = hh
		h.health = hh
	}
	for addr, hh := range prev {
		if next[addr] == nil && hh.stop != nil {
			hh.stop()
		}
	}
	r.hosts[c.cfg.name] = next
}

// drop stops the checkers of clusters that no longer exist.
func (r *healthRegistry) drop(keep map[string]*clusterConfig) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, hosts := range r.hosts {
		if keep[name] != nil {
			continue
		}
		for _, hh := range hosts {
			if hh.stop != nil {
				hh.stop()
			}
		}
		delete(r.hosts, name)
	}
}

// runTCPCheck connects to addr every interval (the first time at once). unhealthyAfter
// failed connects in a row mark the host unhealthy, healthyAfter successes healthy again.
func runTCPCheck(ctx context.Context, hc *healthConfig, addr string, hh *hostHealth) {
	d := net.Dialer{Timeout: hc.timeout}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
		}
		hh.mu.Lock()
		if err != nil {
			hh.hcOKs = 0
			hh.hcFails++
			if hh.hcFails >= hc.unhealthyAfter {
				hh.activeFailed = true
			}
		} else {
			hh.hcFails = 0
			hh.hcOKs++
			if hh.hcOKs >= hc.healthyAfter {
				hh.activeFailed = false
			}
		}
		hh.mu.Unlock()
		t.Reset(max(hc.interval, 10*time.Millisecond))
	}
}

// recordOutcome feeds outlier detection with one attempt on h: status is the upstream
// status, or 0 after a reset or connect failure (a gateway failure, as Envoy counts it).
func (c *upstreamCluster) recordOutcome(h *host, status int, now time.Time) {
	oc := c.cfg.outlier
	hh := h.health
	if oc == nil || hh == nil {
		return
	}
	gateway := status == 0 || status == 502 || status == 503 || status == 504
	hh.mu.Lock()
	if status == 0 || status >= 500 {
		hh.consec5xx++
	} else {
		hh.consec5xx = 0
	}
	if gateway {
		hh.consecGateway++
	} else {
		hh.consecGateway = 0
	}
	eject := oc.enforce5xx && oc.consecutive5xx > 0 && hh.consec5xx >= oc.consecutive5xx ||
		oc.enforceGateway && oc.consecutiveGateway > 0 && hh.consecGateway >= oc.consecutiveGateway
	hh.mu.Unlock()
	if !eject || hh.ejected(now) || !c.mayEject(now) {
		return
	}
	hh.mu.Lock()
	hh.ejections++
	hh.ejectedUntil = now.Add(time.Duration(hh.ejections) * oc.baseEjection)
	hh.consec5xx, hh.consecGateway = 0, 0
	hh.mu.Unlock()
}

// mayEject applies max_ejection_percent to one more ejection.
func (c *upstreamCluster) mayEject(now time.Time) bool {
	ejected := 0
	for _, h := range c.hosts {
		if h.health != nil && h.health.ejected(now) {
			ejected++
		}
	}
	return (ejected+1)*100 <= c.cfg.outlier.maxEjectionPercent*len(c.hosts)
}

// retryAfter reads the wait a rate-limited answer asks for through the policy's
// rate_limited_retry_back_off reset headers (SECONDS format only), capped at its
// max_interval; ok is false when the policy or the answer has none.
func (rp *retryPolicy) retryAfter(h headerMap) (time.Duration, bool) {
	if len(rp.resetHeaders) == 0 {
		return 0, false
	}
	for _, name := range rp.resetHeaders {
		v := h.value(strings.ToLower(name))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			continue
		}
		return min(time.Duration(n)*time.Second, rp.resetMax), true
	}
	return 0, false
}

// compileResetHeaders reads rate_limited_retry_back_off.
func compileResetHeaders(p *retryPolicy, rb *v3routepb.RetryPolicy_RateLimitedRetryBackOff) {
	if rb == nil {
		return
	}
	for _, h := range rb.GetResetHeaders() {
		// TODO: UNIX_TIMESTAMP reset headers are not emulated; only SECONDS is read, so a
		// retry after such a header waits the default back-off instead of the given time.
		if h.GetFormat() == v3routepb.RetryPolicy_SECONDS {
			p.resetHeaders = append(p.resetHeaders, h.GetName())
		}
	}
	p.resetMax = 300 * time.Second // Envoy's default max_interval
	if mi := rb.GetMaxInterval(); mi != nil {
		p.resetMax = mi.AsDuration()
	}
}
