package xds

import (
	"context"
	"log/slog"
	"sync"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// sentResponse is the last response sent on a stream for one type.
type sentResponse struct {
	nonce, version string
}

// streamTracker observes the xDS streams: it counts pushes and NACKs and open streams, and
// remembers what each stream was last sent so that a NACK can name the rejected version.
type streamTracker struct {
	log     *slog.Logger
	metrics *metrics

	mu   sync.Mutex
	sent map[int64]map[string]sentResponse // stream ID → type URL → last response
}

func (t *streamTracker) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc:         t.open,
		StreamClosedFunc:       t.closed,
		DeltaStreamOpenFunc:    t.open,
		DeltaStreamClosedFunc:  t.closed,
		StreamRequestFunc:      t.request,
		StreamResponseFunc:     t.response,
		StreamDeltaRequestFunc: t.deltaRequest,
		StreamDeltaResponseFunc: func(_ int64, _ *v3discoverypb.DeltaDiscoveryRequest,
			resp *v3discoverypb.DeltaDiscoveryResponse,
		) {
			t.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
		},
	}
}

func (t *streamTracker) open(_ context.Context, id int64, typeURL string) error {
	t.metrics.connected.Inc()
	t.log.Debug("xds stream opened", "stream", id, "type", typeLabel(typeURL))
	return nil
}

func (t *streamTracker) closed(id int64, node *v3corepb.Node) {
	t.metrics.connected.Dec()
	t.mu.Lock()
	delete(t.sent, id)
	t.mu.Unlock()
	t.log.Debug("xds stream closed", "stream", id, "node", node.GetId())
}

// request detects a NACK by its error_detail, never by comparing versions, which breaks
// when EDS or RDS subscriptions change (envoy-notes §5.4).
func (t *streamTracker) request(id int64, req *v3discoverypb.DiscoveryRequest) error {
	if req.GetErrorDetail() == nil {
		return nil
	}
	t.mu.Lock()
	last := t.sent[id][req.GetTypeUrl()]
	t.mu.Unlock()
	rejected := ""
	if last.nonce == req.GetResponseNonce() {
		rejected = last.version
	}
	t.nack(id, req.GetNode(), req.GetTypeUrl(), rejected, req.GetErrorDetail().GetMessage())
	return nil
}

func (t *streamTracker) deltaRequest(id int64, req *v3discoverypb.DeltaDiscoveryRequest) error {
	if req.GetErrorDetail() != nil {
		t.nack(id, req.GetNode(), req.GetTypeUrl(), "", req.GetErrorDetail().GetMessage())
	}
	return nil
}

func (t *streamTracker) nack(id int64, node *v3corepb.Node, typeURL, version, msg string) {
	t.metrics.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
	t.log.Warn("xds client rejected resources", "stream", id, "node", node.GetId(),
		"type", typeLabel(typeURL), "version", version, "err", msg)
}

func (t *streamTracker) response(_ context.Context, id int64, _ *v3discoverypb.DiscoveryRequest,
	resp *v3discoverypb.DiscoveryResponse,
) {
	t.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sent[id] == nil {
		t.sent[id] = map[string]sentResponse{}
	}
	t.sent[id][resp.GetTypeUrl()] = sentResponse{
		nonce:   resp.GetNonce(),
		version: resp.GetVersionInfo(),
	}
}
