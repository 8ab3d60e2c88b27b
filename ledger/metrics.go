package ledger

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the ledger's Prometheus metrics. One value is shared by the ledger's parts.
// It is safe for concurrent use.
type Metrics struct {
	costUSD      *prometheus.CounterVec
	tokens       *prometheus.CounterVec
	reservations *prometheus.CounterVec
	rejections   *prometheus.CounterVec
	downgrades   *prometheus.CounterVec
	batchRows    prometheus.Histogram
	queueDepth   prometheus.Gauge
	spoolBytes   prometheus.Gauge
	rowsWritten  prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg; a nil reg leaves them
// unregistered (for tests and tools).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		costUSD: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_ledger_cost_usd_total",
			Help: "Cost of served requests in US dollars.",
		}, []string{"model", "tier"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_ledger_tokens_total",
			Help: "Tokens of served requests, by direction (input, output).",
		}, []string{"model", "tier", "direction"}),
		reservations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_ledger_reservations_total",
			Help: "Budget reservations by result (ok, exceeded, unlimited, error).",
		}, []string{"result"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_ledger_rejections_total",
			Help: "Requests refused by the ledger, by reason.",
		}, []string{"reason"}),
		downgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_ledger_downgrades_total",
			Help: "Requests served by a cheaper model than asked, by reason.",
		}, []string{"reason"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "phogate_ledger_batch_rows",
			Help:    "Rows per usage batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phogate_ledger_queue_depth",
			Help: "Usage rows waiting in memory for a batch.",
		}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phogate_ledger_spool_bytes",
			Help: "Bytes of usage rows in the spool, not yet committed to the store.",
		}),
		rowsWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phogate_ledger_rows_written_total",
			Help: "Usage rows newly committed to the store.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.costUSD, m.tokens, m.reservations, m.rejections, m.downgrades,
			m.batchRows, m.queueDepth, m.spoolBytes, m.rowsWritten)
	}
	return m
}

// Downgrade counts one request served by a cheaper model, for reason (a fixed word such as
// "over_budget").
func (m *Metrics) Downgrade(reason string) { m.downgrades.WithLabelValues(reason).Inc() }

// observeRow counts a served row's cost and tokens.
func (m *Metrics) observeRow(r Row) {
	model := r.ServedModel
	m.costUSD.WithLabelValues(model, r.Tier).Add(r.Cost.Dollars())
	m.tokens.WithLabelValues(model, r.Tier, "input").Add(float64(r.Usage.PromptTokens))
	m.tokens.WithLabelValues(model, r.Tier, "output").Add(float64(r.Usage.CompletionTokens))
}

// PoolCollector exports pgxpool statistics as phogate_ledger_pool_* metrics, labelled by
// pool role. Register it with the registry that serves /metrics.
type PoolCollector struct {
	pools map[string]*pgxpool.Pool

	conns, acquires, acquireWait, emptyAcquires, maxConns *prometheus.Desc
}

var _ prometheus.Collector = (*PoolCollector)(nil)

// NewPoolCollector collects the stats of pools, keyed by role (see [Postgres.Pools]).
func NewPoolCollector(pools map[string]*pgxpool.Pool) *PoolCollector {
	pool := []string{"pool"}
	return &PoolCollector{
		pools: pools,
		conns: prometheus.NewDesc("phogate_ledger_pool_connections",
			"Connections in the pool by state (acquired, idle, constructing).",
			[]string{"pool", "state"}, nil),
		maxConns: prometheus.NewDesc("phogate_ledger_pool_max_connections",
			"Largest size of the pool.", pool, nil),
		acquires: prometheus.NewDesc("phogate_ledger_pool_acquires_total",
			"Successful connection acquisitions.", pool, nil),
		emptyAcquires: prometheus.NewDesc("phogate_ledger_pool_empty_acquires_total",
			"Acquisitions that waited because the pool was empty.", pool, nil),
		acquireWait: prometheus.NewDesc("phogate_ledger_pool_acquire_wait_seconds_total",
			"Time spent waiting for a connection.", pool, nil),
	}
}

// Describe implements [prometheus.Collector].
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.maxConns, c.acquires, c.emptyAcquires,
		c.acquireWait} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector].
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	for name, p := range c.pools {
		s := p.Stat()
		ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue,
			float64(s.AcquiredConns()), name, "acquired")
		ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue,
			float64(s.IdleConns()), name, "idle")
		ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue,
			float64(s.ConstructingConns()), name, "constructing")
		ch <- prometheus.MustNewConstMetric(c.maxConns, prometheus.GaugeValue,
			float64(s.MaxConns()), name)
		ch <- prometheus.MustNewConstMetric(c.acquires, prometheus.CounterValue,
			float64(s.AcquireCount()), name)
		ch <- prometheus.MustNewConstMetric(c.emptyAcquires, prometheus.CounterValue,
			float64(s.EmptyAcquireCount()), name)
		ch <- prometheus.MustNewConstMetric(c.acquireWait, prometheus.CounterValue,
			s.AcquireDuration().Seconds(), name)
	}
}
