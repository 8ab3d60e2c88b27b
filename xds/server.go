package xds

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	v3clustersvcpb "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	v3discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	v3endpointsvcpb "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	v3listenersvcpb "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	v3routesvcpb "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Snapshot keys. Every Envoy shares one snapshot and every gRPC xDS client shares another:
// Envoy must not receive the api_listener (it accepts one only in its bootstrap), and a
// gRPC client must not be offered clusters it cannot use (the STATIC ext_proc cluster).
const (
	envoyNodeKey = "envoy"
	grpcNodeKey  = "grpc"
)

// grpcUserAgentPrefix starts the user_agent_name that gRPC libraries put in their node.
const grpcUserAgentPrefix = "gRPC"

// ServerOptions configure a [Server].
type ServerOptions struct {
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Registerer registers the server's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Server is the xDS control plane: it serves the last published [Resources] over ADS and
// the per-type discovery services, to every Envoy and gRPC xDS client alike. It is safe for
// concurrent use.
type Server struct {
	log     *slog.Logger
	metrics *metrics
	cache   cachev3.SnapshotCache
	xds     serverv3.Server
	prefix  string
	streams *streamTracker

	mu   sync.Mutex // serialises Publish
	last map[string]*cachev3.Snapshot
}

// NewServer returns a server with nothing published; clients wait until the first
// [Server.Publish]. Streams end when the grpc.Server they are registered on stops.
func NewServer(opts ServerOptions) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "xds")
	s := &Server{
		log:     log,
		metrics: newMetrics(opts.Registerer),
		prefix:  versionPrefix(),
		last:    map[string]*cachev3.Snapshot{},
	}
	s.streams = &streamTracker{log: log, metrics: s.metrics, sent: map[int64]map[string]sentResponse{}}
	// ads=true holds EDS and RDS answers until a request names every resource of the
	// type, so Envoy never sees part of a set (envoy-notes §5.2). It suits gRPC clients
	// too, because their snapshot holds only the clusters their routes reference.
	s.cache = cachev3.NewSnapshotCache(true, nodeHash{}, cpLogger{log})
	guarded := &nackGuard{SnapshotCache: s.cache}
	// The context only bounds the server's lifetime; streams end with their grpc.Server.
	s.xds = serverv3.NewServer(context.Background(), guarded, s.streams.callbacks())
	return s
}

// Register registers the aggregated discovery service and the per-type CDS, EDS, LDS and
// RDS services on g.
func (s *Server) Register(g *grpc.Server) {
	v3discoverypb.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	v3clustersvcpb.RegisterClusterDiscoveryServiceServer(g, s.xds)
	v3endpointsvcpb.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	v3listenersvcpb.RegisterListenerDiscoveryServiceServer(g, s.xds)
	v3routesvcpb.RegisterRouteDiscoveryServiceServer(g, s.xds)
}

// Publish validates r and, if it is sound, serves it to every client. A resource set that
// fails [Validate] or the snapshot consistency check is refused with an error and the last
// good one stays in service. Each resource type keeps its version unless its content
// changed, so a weight change moves only EDS (or RDS) and re-pushes nothing else
// (envoy-notes §5.6). Cancelling ctx abandons handing the update to waiting clients.
// Publish takes ownership of r: its resources must not be modified afterwards.
func (s *Server) Publish(ctx context.Context, r *Resources) error {
	if err := Validate(r); err != nil {
		return fmt.Errorf("refusing resources: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[string]*cachev3.Snapshot{
		envoyNodeKey: s.nextSnapshot(s.last[envoyNodeKey], envoyView(r)),
		grpcNodeKey:  s.nextSnapshot(s.last[grpcNodeKey], grpcView(r)),
	}
	// The gRPC view is not checked here: Consistent ignores api_listener RDS references
	// (envoy-notes §5.2), which ValidateSemantics covers instead.
	if err := next[envoyNodeKey].Consistent(); err != nil {
		return fmt.Errorf("refusing resources: %w", err)
	}
	for _, key := range []string{envoyNodeKey, grpcNodeKey} {
		if err := s.cache.SetSnapshot(ctx, key, next[key]); err != nil {
			return fmt.Errorf("publishing %s snapshot: %w", key, err)
		}
		if changed := changedTypes(s.last[key], next[key]); len(changed) > 0 {
			s.log.Info("published snapshot", "clients", key, "changed", changed,
				"versions", versions(next[key]))
		}
		s.last[key] = next[key]
	}
	return nil
}

// Version returns the version of the Envoy snapshot's resources of typeURL, such as
// resourcev3.EndpointType, or "" before the first [Server.Publish].
func (s *Server) Version(typeURL string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if snap := s.last[envoyNodeKey]; snap != nil {
		return snap.GetVersion(typeURL)
	}
	return ""
}

// resourceSet is the content of one snapshot by type.
type resourceSet map[types.ResponseType][]types.Resource

func envoyView(r *Resources) resourceSet {
	return resourceSet{
		types.Listener: toResources(r.Listeners),
		types.Route:    toResources(r.Routes),
		types.Cluster:  toResources(r.Clusters),
		types.Endpoint: toResources(r.Endpoints),
	}
}

// grpcView is what gRPC clients get: their listeners, the routes, and only the clusters
// the routes reference with their endpoints. With ads=true an unreferenced cluster would
// hold back every CDS answer (envoy-notes §5.2).
func grpcView(r *Resources) resourceSet {
	set := resourceSet{types.Listener: toResources(r.GRPCListeners)}
	if len(r.GRPCListeners) == 0 {
		return set
	}
	set[types.Route] = toResources(r.Routes)
	routed := map[string]bool{}
	for _, rc := range r.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				routed[rt.GetRoute().GetCluster()] = true
				for _, cw := range rt.GetRoute().GetWeightedClusters().GetClusters() {
					routed[cw.GetName()] = true
				}
			}
		}
	}
	var clusters []*v3clusterpb.Cluster
	served := map[string]bool{}
	for _, c := range r.Clusters {
		if routed[c.GetName()] {
			clusters = append(clusters, c)
			served[cmp.Or(c.GetEdsClusterConfig().GetServiceName(), c.GetName())] = true
		}
	}
	// Likewise an endpoint resource that no served cluster asks for holds back every EDS
	// answer.
	var endpoints []*v3endpointpb.ClusterLoadAssignment
	for _, e := range r.Endpoints {
		if served[e.GetClusterName()] {
			endpoints = append(endpoints, e)
		}
	}
	set[types.Cluster] = toResources(clusters)
	set[types.Endpoint] = toResources(endpoints)
	return set
}

func toResources[T types.Resource](in []T) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

// nextSnapshot builds the snapshot for set, keeping prev's entry (and version) for every
// type whose content is unchanged.
func (s *Server) nextSnapshot(prev *cachev3.Snapshot, set resourceSet) *cachev3.Snapshot {
	next := &cachev3.Snapshot{}
	if prev != nil {
		next.Resources = prev.Resources
	}
	for _, t := range []types.ResponseType{types.Cluster, types.Endpoint, types.Listener, types.Route} {
		v := s.prefix + "-" + contentHash(set[t])
		if next.Resources[t].Version != v {
			next.Resources[t] = cachev3.NewResources(v, set[t])
		}
	}
	return next
}

// contentHash hashes the deterministic encoding of items, in order.
func contentHash(items []types.Resource) string {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, m := range items {
		b, err := opts.Marshal(m)
		if err != nil {
			// A message that cannot be marshalled cannot be served either; a unique
			// version at least keeps it from being mistaken for earlier content.
			b = []byte(err.Error())
		}
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// versionPrefix is unique per process start, so a client that reconnects after a restart
// with a version from the previous process is never taken to be up to date.
func versionPrefix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

var typeNames = map[types.ResponseType]string{
	types.Cluster: "cluster", types.Endpoint: "endpoint",
	types.Listener: "listener", types.Route: "route",
}

func changedTypes(prev, next *cachev3.Snapshot) []string {
	var out []string
	for _, t := range []types.ResponseType{types.Cluster, types.Endpoint, types.Listener, types.Route} {
		if prev == nil || prev.Resources[t].Version != next.Resources[t].Version {
			out = append(out, typeNames[t])
		}
	}
	return out
}

func versions(s *cachev3.Snapshot) map[string]string {
	out := map[string]string{}
	for t, name := range typeNames {
		out[name] = s.Resources[t].Version
	}
	return out
}

// typeLabel turns a type URL into a bounded metric label value.
func typeLabel(typeURL string) string {
	switch typeURL {
	case resourcev3.ClusterType:
		return "cluster"
	case resourcev3.EndpointType:
		return "endpoint"
	case resourcev3.ListenerType:
		return "listener"
	case resourcev3.RouteType:
		return "route"
	}
	return "other"
}

// nodeHash keys snapshots by kind of client: all Envoys share one, all gRPC clients another.
type nodeHash struct{}

func (nodeHash) ID(n *v3corepb.Node) string {
	if strings.HasPrefix(n.GetUserAgentName(), grpcUserAgentPrefix) {
		return grpcNodeKey
	}
	return envoyNodeKey
}

var _ cachev3.NodeHash = nodeHash{}

// nackGuard breaks the SotW NACK resend loop (envoy-notes §5.4). A NACK carries the last
// version the client accepted, which differs from the snapshot's, so the plain cache
// answers it at once with the very content just rejected, and the client NACKs again,
// thousands of times a second. When a request carries error_detail and the client was last
// sent the current version, the guard presents it to the cache as up to date: the watch is
// parked and fires on the next published version.
type nackGuard struct {
	cachev3.SnapshotCache
}

func (g *nackGuard) CreateWatch(req *cachev3.Request, sub cachev3.Subscription,
	ch chan cachev3.Response,
) (func(), error) {
	if req.GetErrorDetail() != nil {
		if snap, err := g.GetSnapshot(nodeHash{}.ID(req.GetNode())); err == nil {
			cur := snap.GetVersion(req.GetTypeUrl())
			if sentVersion(sub.ReturnedResources(), cur) {
				parked := proto.Clone(req).(*cachev3.Request)
				parked.VersionInfo = cur
				req = parked
			}
		}
	}
	return g.SnapshotCache.CreateWatch(req, sub, ch)
}

// sentVersion reports whether the resources last returned to the client carry version v.
// In SotW every resource of one response carries that response's version.
func sentVersion(returned map[string]string, v string) bool {
	for _, rv := range returned {
		if rv == v {
			return true
		}
	}
	return false
}

var _ cachev3.Cache = (*nackGuard)(nil)

// cpLogger adapts go-control-plane's printf logger to slog. go-control-plane logs every
// watch and stale nonce at Info; those are per-stream events, so they go to Debug.
type cpLogger struct{ l *slog.Logger }

func (c cpLogger) logf(level slog.Level, format string, args []any) {
	if c.l.Enabled(context.Background(), level) {
		c.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (c cpLogger) Debugf(format string, args ...any) { c.logf(slog.LevelDebug, format, args) }
func (c cpLogger) Infof(format string, args ...any)  { c.logf(slog.LevelDebug, format, args) }
func (c cpLogger) Warnf(format string, args ...any)  { c.logf(slog.LevelWarn, format, args) }
func (c cpLogger) Errorf(format string, args ...any) { c.logf(slog.LevelError, format, args) }
