package xds

import "github.com/prometheus/client_golang/prometheus"

// metrics are the control plane's Prometheus metrics.
type metrics struct {
	pushes    *prometheus.CounterVec
	nacks     *prometheus.CounterVec
	connected prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_xds_pushes_total",
			Help: "xDS responses sent to clients, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phogate_xds_nacks_total",
			Help: "xDS responses rejected by clients (requests carrying error_detail), by type.",
		}, []string{"type"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phogate_xds_connected_clients",
			Help: "Open xDS streams.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.pushes, m.nacks, m.connected)
	}
	return m
}
