package semantic

import "github.com/prometheus/client_golang/prometheus"

// Lookup results, the values of the result label of phogate_semantic_lookups_total.
const (
	resultHit           = "hit"
	resultMiss          = "miss"
	resultGuardRejected = "guard_rejected"
	resultError         = "error"
)

// Metrics are the semantic cache's Prometheus metrics. One value is shared by an [Index] and
// the [HTTPEmbedder] feeding it.
type Metrics struct {
	// Lookups counts lookups by result: hit, miss, guard_rejected or error.
	Lookups *prometheus.CounterVec
	// Entries is the number of live entries in the index.
	Entries prometheus.Gauge
	// LookupSeconds is the time of a lookup after the embedding, in seconds.
	LookupSeconds prometheus.Histogram
	// EmbedSeconds is the time to embed a lookup's or an addition's text, in seconds.
	EmbedSeconds prometheus.Histogram
	// EmbedBatchSize is the number of texts per embeddings request sent to a provider.
	EmbedBatchSize prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg; a nil reg leaves them
// unregistered. It panics if a metric is already registered, like
// [prometheus.Registerer.MustRegister].
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_semantic_lookups_total",
			Help: "Semantic cache lookups by result (hit, miss, guard_rejected, error).",
		}, []string{"result"}),
		Entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phogate_semantic_index_entries",
			Help: "Live entries in the semantic index.",
		}),
		LookupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "phogate_semantic_lookup_seconds",
			Help: "Semantic index search time, excluding the embedding.",
			// 10µs to about 20ms: the search is in memory.
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 12),
		}),
		EmbedSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "phogate_semantic_embed_seconds",
			Help: "Time to embed one text, including batching and the provider call.",
			// 50µs (built-in) to about 3s (a remote provider).
			Buckets: prometheus.ExponentialBuckets(50e-6, 3, 12),
		}),
		EmbedBatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "phogate_semantic_embed_batch_size",
			Help:    "Texts per embeddings request sent to the provider.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
	}
	for _, r := range []string{resultHit, resultMiss, resultGuardRejected, resultError} {
		m.Lookups.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Lookups, m.Entries, m.LookupSeconds, m.EmbedSeconds,
			m.EmbedBatchSize)
	}
	return m
}
