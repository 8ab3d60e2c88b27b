package cache

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric label values.
const (
	resultHit   = "hit"
	resultMiss  = "miss"
	resultError = "error"
	resultOK    = "ok"
	// resultSkipped counts stores not attempted because Redis is down.
	resultSkipped = "skipped"
)

// Metrics are the cache's Prometheus metrics. Build one with [NewMetrics] and pass it in
// [Options.Metrics]; another cache layer of the package (the semantic cache) may share it.
type Metrics struct {
	lookups    *prometheus.CounterVec
	stores     *prometheus.CounterVec
	bytes      *prometheus.GaugeVec
	evictions  *prometheus.CounterVec
	collapsed  *prometheus.CounterVec
	savedUSD   *prometheus.CounterVec
	redisUp    prometheus.Gauge
	knownModel map[string]bool
}

// NewMetrics creates the cache metrics and registers them with reg; a nil reg registers
// nothing. models are the configured model names, the only values the "model" label takes;
// others become "unknown". Empty models accepts any name.
func NewMetrics(reg prometheus.Registerer, models ...string) *Metrics {
	m := &Metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_cache_lookups_total",
			Help: "Exact-cache lookups by layer (l1, l2) and result (hit, miss, error).",
		}, []string{"layer", "result"}),
		stores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_cache_stores_total",
			Help: "Exact-cache stores by layer and result (ok, error, skipped).",
		}, []string{"layer", "result"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phogate_cache_bytes",
			Help: "Bytes of answers held, by layer.",
		}, []string{"layer"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_cache_evictions_total",
			Help: "Entries evicted to stay within the size bound, by layer.",
		}, []string{"layer"}),
		collapsed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_cache_collapsed_total",
			Help: "Requests that waited for an identical request in flight, by result " +
				"(hit, abandoned, timeout, canceled).",
		}, []string{"result"}),
		savedUSD: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_cache_saved_usd_total",
			Help: "Upstream cost in USD that cache hits avoided, by model.",
		}, []string{"model"}),
		redisUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phogate_cache_redis_up",
			Help: "1 when the cache's Redis answers, 0 while it is treated as down.",
		}),
		knownModel: map[string]bool{},
	}
	for _, name := range models {
		m.knownModel[name] = true
	}
	if reg != nil {
		reg.MustRegister(m.lookups, m.stores, m.bytes, m.evictions, m.collapsed, m.savedUSD,
			m.redisUp)
	}
	return m
}

// RecordSaved adds usd, the upstream cost a cache hit avoided, to the saved-cost counter of
// model. It is safe for concurrent use.
func (m *Metrics) RecordSaved(model string, usd float64) {
	if usd <= 0 {
		return
	}
	if len(m.knownModel) > 0 && !m.knownModel[model] {
		model = "unknown"
	}
	m.savedUSD.WithLabelValues(model).Add(usd)
}
