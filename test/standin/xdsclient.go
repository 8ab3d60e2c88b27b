package standin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/phochat/phogate/xds"
)

// state is an immutable view of the accepted configuration. Updates copy it.
type state struct {
	clusters  map[string]*clusterConfig
	cla       map[string]*v3endpointpb.ClusterLoadAssignment
	upstreams map[string]*upstreamCluster
	listeners map[string]*listenerConfig
	routes    map[string]*routeConfig
	received  map[string]bool // type URLs accepted at least once
	health    *healthRegistry // shared by every state of one proxy
}

func newState() *state {
	return &state{
		clusters: map[string]*clusterConfig{}, cla: map[string]*v3endpointpb.ClusterLoadAssignment{},
		upstreams: map[string]*upstreamCluster{}, listeners: map[string]*listenerConfig{},
		routes: map[string]*routeConfig{}, received: map[string]bool{},
	}
}

func (s *state) clone() *state {
	return &state{
		clusters: maps.Clone(s.clusters), cla: maps.Clone(s.cla),
		upstreams: maps.Clone(s.upstreams), listeners: maps.Clone(s.listeners),
		routes: maps.Clone(s.routes), received: maps.Clone(s.received), health: s.health,
	}
}

// edsNames lists the ClusterLoadAssignment names the EDS clusters reference.
func (s *state) edsNames() []string {
	var names []string
	for _, c := range s.clusters {
		if c.eds {
			names = append(names, c.edsName)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// rdsNames lists the RouteConfiguration names the listeners reference.
func (s *state) rdsNames() []string {
	var names []string
	for _, l := range s.listeners {
		if l.hcm.rdsName != "" {
			names = append(names, l.hcm.rdsName)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func (s *state) complete() bool {
	if !s.received[resource.ClusterType] || !s.received[resource.ListenerType] {
		return false
	}
	for _, n := range s.edsNames() {
		if s.cla[n] == nil {
			return false
		}
	}
	for _, n := range s.rdsNames() {
		if s.routes[n] == nil {
			return false
		}
	}
	return true
}

// rebuildUpstreams refreshes the load balancers after a CDS or EDS change.
func (s *state) rebuildUpstreams() {
	s.upstreams = map[string]*upstreamCluster{}
	for name, c := range s.clusters {
		cla := s.cla[c.edsName]
		if !c.eds {
			cla = c.inline.GetLoadAssignment()
		}
		uc := newUpstreamCluster(c, cla)
		s.health.sync(uc)
		s.upstreams[name] = uc
	}
	s.health.drop(s.clusters)
}

// adsStream tracks the per-type subscription of one ADS stream.
type adsStream struct {
	stream  v3discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	names   map[string][]string // nil = wildcard
	nonce   map[string]string
	version map[string]string
}

// runADS keeps one ADS stream open until ctx ends, reconnecting with a short backoff.
func (p *Proxy) runADS(ctx context.Context) {
	versions := map[string]string{}
	for {
		err := p.adsOnce(ctx, versions)
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("ads stream ended", "err", err)
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (p *Proxy) adsOnce(ctx context.Context, versions map[string]string) error {
	st, err := v3discoverypb.NewAggregatedDiscoveryServiceClient(p.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("opening ads stream: %w", err)
	}
	a := &adsStream{stream: st, names: map[string][]string{}, nonce: map[string]string{}, version: versions}
	// Wildcard subscriptions to CDS and LDS; EDS and RDS follow from their contents.
	for _, t := range []string{resource.ClusterType, resource.ListenerType} {
		if err := p.sendRequest(a, t, nil); err != nil {
			return err
		}
	}
	s := p.state.Load()
	if err := p.subscribe(a, resource.EndpointType, s.edsNames()); err != nil {
		return err
	}
	if err := p.subscribe(a, resource.RouteType, s.rdsNames()); err != nil {
		return err
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("receiving: %w", err)
		}
		if err := p.handleResponse(ctx, a, resp); err != nil {
			return err
		}
	}
}

func (p *Proxy) node() *v3corepb.Node {
	return &v3corepb.Node{Id: p.opts.NodeID, Cluster: p.opts.Cluster}
}

func (p *Proxy) sendRequest(a *adsStream, typeURL string, detail error) error {
	req := &v3discoverypb.DiscoveryRequest{
		Node: p.node(), TypeUrl: typeURL, ResourceNames: a.names[typeURL],
		VersionInfo: a.version[typeURL], ResponseNonce: a.nonce[typeURL],
	}
	if detail != nil {
		req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: detail.Error()}
	}
	if err := a.stream.Send(req); err != nil {
		return fmt.Errorf("sending %s request: %w", typeURL, err)
	}
	return nil
}

// subscribe sends a new request for typeURL when its resource names changed.
func (p *Proxy) subscribe(a *adsStream, typeURL string, names []string) error {
	old, ok := a.names[typeURL]
	if ok && slices.Equal(old, names) || !ok && len(names) == 0 {
		return nil
	}
	a.names[typeURL] = names
	return p.sendRequest(a, typeURL, nil)
}

// handleResponse applies one DiscoveryResponse, then ACKs or NACKs it. A rejected response
// leaves the last good configuration in place.
func (p *Proxy) handleResponse(ctx context.Context, a *adsStream, resp *v3discoverypb.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	a.nonce[t] = resp.GetNonce()
	next, err := p.apply(ctx, resp)
	if err != nil {
		p.stats.nacks.Add(1)
		p.log.Warn("rejecting xds response", "type", t, "version", resp.GetVersionInfo(), "err", err)
		return p.sendRequest(a, t, err)
	}
	p.stats.acks.Add(1)
	a.version[t] = resp.GetVersionInfo()
	p.log.Info("accepted xds response", "type", t, "version", resp.GetVersionInfo(),
		"resources", len(resp.GetResources()))
	if err := p.sendRequest(a, t, nil); err != nil {
		return err
	}
	if err := p.subscribe(a, resource.EndpointType, next.edsNames()); err != nil {
		return err
	}
	if err := p.subscribe(a, resource.RouteType, next.rdsNames()); err != nil {
		return err
	}
	p.markReady(next)
	return nil
}

func (p *Proxy) markReady(s *state) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !s.complete() {
		return
	}
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
}

// apply decodes, validates and compiles the response into a new state and publishes it.
func (p *Proxy) apply(ctx context.Context, resp *v3discoverypb.DiscoveryResponse) (*state, error) {
	msgs, err := decodeResources(resp)
	if err != nil {
		return nil, err
	}
	next := p.state.Load().clone()
	switch resp.GetTypeUrl() {
	case resource.ClusterType:
		err = applyClusters(next, msgs)
	case resource.EndpointType:
		err = applyEndpoints(next, msgs)
	case resource.RouteType:
		err = applyRoutes(next, msgs)
	case resource.ListenerType:
		err = p.applyListeners(ctx, next, msgs)
	default:
		err = fmt.Errorf("unsupported type %s", resp.GetTypeUrl())
	}
	if err != nil {
		return nil, err
	}
	next.received[resp.GetTypeUrl()] = true
	p.state.Store(next)
	return next, nil
}

// decodeResources unmarshals and deeply validates every resource (xds.ValidateResource
// recurses into each typed_config).
func decodeResources(resp *v3discoverypb.DiscoveryResponse) ([]proto.Message, error) {
	var out []proto.Message
	for i, r := range resp.GetResources() {
		if r.GetTypeUrl() != resp.GetTypeUrl() {
			return nil, fmt.Errorf("resource %d: type %s in a %s response", i, r.GetTypeUrl(), resp.GetTypeUrl())
		}
		m, err := r.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		if err := xds.ValidateResource(m); err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func applyClusters(s *state, msgs []proto.Message) error {
	s.clusters = map[string]*clusterConfig{}
	for _, m := range msgs {
		c, err := compileCluster(m.(*v3clusterpb.Cluster))
		if err != nil {
			return err
		}
		s.clusters[c.name] = c
	}
	s.rebuildUpstreams()
	return nil
}

func applyEndpoints(s *state, msgs []proto.Message) error {
	for _, m := range msgs {
		cla := m.(*v3endpointpb.ClusterLoadAssignment)
		s.cla[cla.GetClusterName()] = cla
	}
	s.rebuildUpstreams()
	return nil
}

func applyRoutes(s *state, msgs []proto.Message) error {
	for _, m := range msgs {
		rc, err := compileRouteConfig(m.(*v3routepb.RouteConfiguration))
		if err != nil {
			return err
		}
		s.routes[rc.name] = rc
	}
	return nil
}

func (p *Proxy) applyListeners(ctx context.Context, s *state, msgs []proto.Message) error {
	next := map[string]*listenerConfig{}
	for _, m := range msgs {
		lc, err := compileListener(m.(*v3listenerpb.Listener))
		if err != nil {
			return err
		}
		if next[lc.name] != nil {
			return fmt.Errorf("duplicate listener %q", lc.name)
		}
		next[lc.name] = lc
	}
	if len(next) == 0 && len(msgs) > 0 {
		return errors.New("no listeners")
	}
	if err := p.reconcileListeners(ctx, next); err != nil {
		return err
	}
	s.listeners = next
	return nil
}
