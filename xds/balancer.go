package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/routing"
)

// WeightStore shares balancer steps among control planes, so that every one of them serves
// Envoy the same weights. Implementations must be safe for concurrent use.
type WeightStore interface {
	// Load returns the latest stored step; a zero Epoch when none is stored.
	Load(ctx context.Context) (WeightStep, error)
	// Commit stores s unless a step with an Epoch at or after s.Epoch is stored, and returns
	// the step stored afterwards.
	Commit(ctx context.Context, s WeightStep) (WeightStep, error)
}

// BalancerOptions configure a [Balancer].
type BalancerOptions struct {
	// Config is the gateway config; its Balancing section sets the rule. Required.
	Config *config.Config
	// Server receives the rebuilt resources. Required.
	Server *Server
	// Stats are the endpoint statistics the weights follow. Required.
	Stats *routing.EndpointStats
	// Build holds the other build options; its weight maps are replaced on every step.
	Build BuildOptions
	// Store, when set, shares steps with other control planes; nil keeps them in process.
	Store WeightStore
	// Logger receives the balancer's logs; nil discards them.
	Logger *slog.Logger
	// Registerer registers the balancer's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Balancer turns endpoint statistics into endpoint and cluster weights and publishes them
// through the [Server] every interval, when they changed. Only EDS moves for endpoint
// weights and only RDS for cluster weights, since the server versions each type by its
// content. Its methods are safe for concurrent use.
type Balancer struct {
	opts    BalancerOptions
	rule    rule
	log     *slog.Logger
	metrics *balancerMetrics

	mu        sync.Mutex // serialises steps
	last      WeightStep
	published bool
	pending   time.Time // oldest observation not yet reflected by a push
	storeDown bool      // the store failed on the last step; logged once per outage
}

// NewBalancer returns a balancer; call [Balancer.Run] to start it.
func NewBalancer(opts BalancerOptions) (*Balancer, error) {
	if opts.Config == nil || opts.Server == nil || opts.Stats == nil {
		return nil, errors.New("xds: BalancerOptions.Config, Server and Stats are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Balancer{
		opts:    opts,
		rule:    newRule(opts.Config.Balancing),
		log:     log.With("component", "balancer"),
		metrics: newBalancerMetrics(opts.Registerer, opts.Config),
	}, nil
}

// Run steps every interval until ctx ends, and returns nil then. Steps fall on multiples
// of the interval by the wall clock, so control planes sharing a [WeightStore] step
// together.
func (b *Balancer) Run(ctx context.Context) error {
	interval := b.opts.Config.Balancing.Interval.Duration
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := b.Step(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("balancer step failed", "err", err)
		}
	}
}

// Step computes the weights for the current interval and publishes them when they differ
// from the last published ones. It reports whether it published. Cancelling ctx abandons
// the store and the publish.
func (b *Balancer) Step(ctx context.Context) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.opts.Now()
	interval := b.opts.Config.Balancing.Interval.Duration
	epoch := now.UnixNano() / int64(interval)
	if p := b.opts.Stats.TakePending(); !p.IsZero() && (b.pending.IsZero() || p.Before(b.pending)) {
		b.pending = p
	}

	prev := b.previous(ctx)
	step := prev
	if prev.Epoch < epoch {
		step = b.rule.nextStep(b.opts.Config, prev, epoch, b.opts.Stats.Snapshot(now))
		step = b.commit(ctx, step)
	}
	b.metrics.observeStats(b.opts.Config, b.opts.Stats.Snapshot(now))
	b.metrics.observeProviders(b.opts.Config, b.opts.Stats)

	changed := !b.published || !sameWeights(b.last, step)
	b.last = step
	if !changed {
		return false, nil
	}
	if err := b.publish(ctx, step); err != nil {
		return false, err
	}
	b.published = true
	if !b.pending.IsZero() {
		b.metrics.toPush.Observe(b.opts.Now().Sub(b.pending).Seconds())
		b.pending = time.Time{}
	}
	return true, nil
}

// previous is the step to continue from: the store's when there is one and it answers,
// else the last local one.
func (b *Balancer) previous(ctx context.Context) WeightStep {
	if b.opts.Store == nil {
		return b.last
	}
	s, err := b.opts.Store.Load(ctx)
	if err != nil {
		b.storeFailed(err)
		return b.last
	}
	if s.Epoch < b.last.Epoch {
		return b.last
	}
	return s
}

// commit offers step to the store and returns what the store holds for the step; without
// a store, or when it fails, step itself.
func (b *Balancer) commit(ctx context.Context, step WeightStep) WeightStep {
	if b.opts.Store == nil {
		return step
	}
	got, err := b.opts.Store.Commit(ctx, step)
	if err != nil {
		b.storeFailed(err)
		return step
	}
	if b.storeDown {
		b.storeDown = false
		b.log.Info("balancer weight store back")
	}
	return got
}

func (b *Balancer) storeFailed(err error) {
	if !b.storeDown {
		b.storeDown = true
		b.log.Warn("balancer weight store unavailable; weights computed locally", "err", err)
	}
}

// publish rebuilds the resources with step's weights and publishes them.
func (b *Balancer) publish(ctx context.Context, step WeightStep) error {
	opts := b.opts.Build
	opts.EndpointWeights = map[string]map[string]uint32{}
	for p, sh := range step.Endpoints {
		opts.EndpointWeights[p] = integerWeights(sh)
	}
	opts.ClusterWeights = map[string]map[string]uint32{}
	for m, sh := range step.Clusters {
		opts.ClusterWeights[m] = integerWeights(sh)
	}
	r, err := Build(b.opts.Config, opts)
	if err != nil {
		return fmt.Errorf("building weighted resources: %w", err)
	}
	if err := b.opts.Server.Publish(ctx, r); err != nil {
		return err
	}
	b.metrics.observeWeights(opts)
	b.log.Debug("balancer published weights", "epoch", step.Epoch)
	return nil
}

// Weights returns the integer weights last computed: provider → endpoint → weight and
// model → provider → weight. The maps are the caller's.
func (b *Balancer) Weights() (endpoints, clusters map[string]map[string]uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	endpoints, clusters = map[string]map[string]uint32{}, map[string]map[string]uint32{}
	for p, sh := range b.last.Endpoints {
		endpoints[p] = integerWeights(sh)
	}
	for m, sh := range b.last.Clusters {
		clusters[m] = integerWeights(sh)
	}
	return endpoints, clusters
}

// sameWeights reports whether two steps give the same integer weights.
func sameWeights(a, b WeightStep) bool {
	eq := func(x, y map[string]Shares) bool {
		return maps.EqualFunc(x, y, func(s, t Shares) bool {
			return maps.Equal(integerWeights(s), integerWeights(t))
		})
	}
	return eq(a.Endpoints, b.Endpoints) && eq(a.Clusters, b.Clusters)
}

// balancerMetrics are the balancer's Prometheus metrics. Label values come from the config:
// clusters, endpoints, models and providers it names.
type balancerMetrics struct {
	endpointWeight *prometheus.GaugeVec
	clusterWeight  *prometheus.GaugeVec
	ttfb           *prometheus.GaugeVec
	perToken       *prometheus.GaugeVec
	errorRatio     *prometheus.GaugeVec
	limitRatio     *prometheus.GaugeVec
	providerUp     *prometheus.GaugeVec
	toPush         prometheus.Histogram
}

func newBalancerMetrics(reg prometheus.Registerer, cfg *config.Config) *balancerMetrics {
	ep := []string{"cluster", "endpoint"}
	m := &balancerMetrics{
		endpointWeight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phogate_balancer_endpoint_weight",
			Help: "EDS load_balancing_weight last published for an endpoint (out of 1000).",
		}, ep),
		clusterWeight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phogate_balancer_cluster_weight",
			Help: "RDS weighted_clusters weight last published for a provider of a model.",
		}, []string{"model", "provider"}),
		ttfb: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phogate_balancer_endpoint_ttfb_seconds",
			Help: "Moving average of an endpoint's time to first byte.",
		}, ep),
		perToken: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phogate_balancer_endpoint_token_seconds",
			Help: "Moving average of an endpoint's time per output token.",
		}, ep),
		errorRatio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phogate_balancer_endpoint_error_ratio",
			Help: "Moving share of an endpoint's answers that failed (5xx, reset, connect).",
		}, ep),
		limitRatio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phogate_balancer_endpoint_rate_limit_ratio",
			Help: "Moving share of an endpoint's answers that were 429.",
		}, ep),
		providerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phogate_balancer_provider_up",
			Help: "1 while a provider is in use, 0 while it is skipped after repeated failures.",
		}, []string{"provider"}),
		toPush: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "phogate_balancer_observation_to_push_seconds",
			Help: "Time from the oldest observation folded since the previous push to the " +
				"push of weights that reflects it.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.endpointWeight, m.clusterWeight, m.ttfb, m.perToken, m.errorRatio,
			m.limitRatio, m.providerUp, m.toPush)
	}
	for _, p := range cfg.Providers {
		m.providerUp.WithLabelValues(p.Name).Set(1)
	}
	return m
}

func (m *balancerMetrics) observeWeights(opts BuildOptions) {
	for p, ws := range opts.EndpointWeights {
		for addr, w := range ws {
			m.endpointWeight.WithLabelValues(ProviderClusterName(p), addr).Set(float64(w))
		}
	}
	for model, ws := range opts.ClusterWeights {
		for p, w := range ws {
			m.clusterWeight.WithLabelValues(model, p).Set(float64(w))
		}
	}
}

// observeStats exports the statistics of configured endpoints only, so that label values
// stay bounded.
func (m *balancerMetrics) observeStats(cfg *config.Config,
	stats map[routing.EndpointKey]routing.EndpointStat) {
	for _, p := range cfg.Providers {
		for _, e := range p.Endpoints {
			st, ok := stats[routing.EndpointKey{Provider: p.Name, Endpoint: e.Address}]
			if !ok {
				continue
			}
			c := ProviderClusterName(p.Name)
			m.ttfb.WithLabelValues(c, e.Address).Set(st.TTFB.Seconds())
			m.perToken.WithLabelValues(c, e.Address).Set(st.PerToken.Seconds())
			m.errorRatio.WithLabelValues(c, e.Address).Set(st.ErrorShare)
			m.limitRatio.WithLabelValues(c, e.Address).Set(st.RateLimitShare)
		}
	}
}

func (m *balancerMetrics) observeProviders(cfg *config.Config, stats *routing.EndpointStats) {
	for _, p := range cfg.Providers {
		up := 1.0
		if stats.ProviderDown(p.Name) {
			up = 0
		}
		m.providerUp.WithLabelValues(p.Name).Set(up)
	}
}
