package extproc

import "github.com/prometheus/client_golang/prometheus"

// metrics are the ext_proc server's Prometheus metrics. Every label takes values fixed by code
// or config: route is one of the route constants, model a configured model or "unknown", code
// an HTTP status or "passthrough" or "aborted".
type metrics struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	processing      prometheus.Histogram
	streamsActive   prometheus.Gauge
	streamErrors    *prometheus.CounterVec
	tokens          *prometheus.CounterVec
	attempts        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_extproc_requests_total",
			Help: "Requests seen by the ext_proc server, by route, model and final HTTP status.",
		}, []string{"route", "model", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "phogate_extproc_request_duration_seconds",
			Help: "Time from the request headers to the end of the response.",
			// Upstream model answers take from a fraction of a second to minutes.
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320},
		}, []string{"route", "model"}),
		processing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "phogate_extproc_processing_seconds",
			Help: "Time the ext_proc server spends on one message, which Envoy adds to the request.",
			// 25µs to about 0.8s: the overhead budget is a few milliseconds.
			Buckets: prometheus.ExponentialBuckets(0.000025, 2, 16),
		}),
		streamsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phogate_extproc_streams_active",
			Help: "Open ext_proc streams, one per HTTP request in flight.",
		}),
		streamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_extproc_stream_errors_total",
			Help: "ext_proc streams that ended in error or saw an unexpected message, by reason.",
		}, []string{"reason"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_extproc_tokens_total",
			Help: "Tokens reported by providers, by model and direction (input, output).",
		}, []string{"model", "direction"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_extproc_upstream_attempts_total",
			Help: "Upstream attempts seen by the model clusters' filter, by provider and HTTP " +
				"status; failed ones were retried on the next provider when retries remained.",
		}, []string{"provider", "code"}),
	}
	for _, c := range []prometheus.Collector{
		m.requests, m.requestDuration, m.processing, m.streamsActive, m.streamErrors, m.tokens,
		m.attempts,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Stream error reasons.
const (
	reasonRecv       = "recv"
	reasonSend       = "send"
	reasonBadMessage = "bad_message"
	reasonOutOfOrder = "out_of_order"
)
