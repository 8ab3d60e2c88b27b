// Package standin is a small test double for Envoy: an HTTP connection manager with the
// ext_proc filter and the router, configured only over SotW ADS. It follows the contract in
// the project's Envoy notes (§1–§4 and the harness checklist of §8) and holds no product
// logic. Use it where no envoy binary is available.
package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Options configures [Start].
type Options struct {
	// XDSAddress is the host:port of the ADS server.
	XDSAddress string
	// NodeID is sent as node.id in every DiscoveryRequest.
	NodeID string
	// Cluster is sent as node.cluster.
	Cluster string
	// Logger receives debug and lifecycle logs; nil discards them.
	Logger *slog.Logger
}

// Stats is a snapshot of the proxy's counters, named after Envoy's.
type Stats struct {
	Acks                    int64 // xDS responses accepted
	Nacks                   int64 // xDS responses rejected
	SpuriousMessages        int64 // ext_proc spurious_msgs_received
	ClearRouteCacheIgnored  int64 // ext_proc clear_route_cache_ignored
	RouteCacheCleared       int64 // route re-matched after clear_route_cache
	MessageTimeouts         int64 // ext_proc message_timeouts
	FailureModeAllowed      int64 // ext_proc failure_mode_allowed
	RejectedHeaderMutations int64 // ext_proc rejected_header_mutations
	StreamsStarted          int64 // ext_proc gRPC streams opened
	StreamErrors            int64 // ext_proc streams ended with a non-OK status
	ImmediateResponses      int64 // ext_proc immediate responses applied
	UpstreamRequests        int64 // upstream attempts, retries included
	Retries                 int64 // upstream retries
}

type counters struct {
	acks, nacks, spurious, clearIgnored, cleared, timeouts, failOpen atomic.Int64
	rejectedHeaderMutations, streams, streamErrors, immediate        atomic.Int64
	upstream, retries                                                atomic.Int64
}

// Served records which upstream endpoint served one request.
type Served struct {
	RequestID string // x-request-id
	Cluster   string
	Endpoint  string // host:port of the last attempt
	Status    int    // upstream status of the last attempt; 0 after a connection failure
}

// Proxy is a running stand-in. Its methods are safe for concurrent use.
type Proxy struct {
	opts   Options
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	conn   *grpc.ClientConn
	state  atomic.Pointer[state]
	stats  counters

	h1, h2c *http.Transport

	mu        sync.Mutex
	listeners map[string]*boundListener
	grpcConns map[string]*grpc.ClientConn
	served    []Served
	ready     chan struct{}
	closed    bool
}

// Start connects to the ADS server and returns at once; configuration arrives in the
// background. Cancelling ctx stops the proxy like [Proxy.Close].
func Start(ctx context.Context, opts Options) (*Proxy, error) {
	if opts.XDSAddress == "" || opts.NodeID == "" {
		return nil, errors.New("standin: XDSAddress and NodeID are required")
	}
	conn, err := grpc.NewClient(opts.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("standin: dialing ADS: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Proxy{
		opts:      opts,
		log:       log.With("component", "standin"),
		cancel:    cancel,
		done:      make(chan struct{}),
		conn:      conn,
		h1:        newTransport(false),
		h2c:       newTransport(true),
		listeners: map[string]*boundListener{},
		grpcConns: map[string]*grpc.ClientConn{},
		ready:     make(chan struct{}),
	}
	st := newState()
	st.health = newHealthRegistry(ctx)
	p.state.Store(st)
	go func() {
		defer close(p.done)
		p.runADS(ctx)
	}()
	return p, nil
}

// WaitReady blocks until CDS and LDS arrived, every EDS and RDS resource they reference
// arrived, and every listener is bound; or until ctx ends.
func (p *Proxy) WaitReady(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-p.done:
		return errors.New("standin: proxy stopped before it was ready")
	case <-ctx.Done():
		return fmt.Errorf("standin: waiting for xDS: %w", ctx.Err())
	}
}

// ListenerAddr returns the bound host:port of the LDS listener called name.
func (p *Proxy) ListenerAddr(name string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	bl, ok := p.listeners[name]
	if !ok {
		return "", false
	}
	return bl.ln.Addr().String(), true
}

// Stats returns the current counters.
func (p *Proxy) Stats() Stats {
	c := &p.stats
	return Stats{
		Acks: c.acks.Load(), Nacks: c.nacks.Load(), SpuriousMessages: c.spurious.Load(),
		ClearRouteCacheIgnored: c.clearIgnored.Load(), RouteCacheCleared: c.cleared.Load(),
		MessageTimeouts: c.timeouts.Load(), FailureModeAllowed: c.failOpen.Load(),
		RejectedHeaderMutations: c.rejectedHeaderMutations.Load(),
		StreamsStarted:          c.streams.Load(), StreamErrors: c.streamErrors.Load(),
		ImmediateResponses: c.immediate.Load(), UpstreamRequests: c.upstream.Load(),
		Retries: c.retries.Load(),
	}
}

// Served returns, in completion order, which endpoint served each routed request. The
// returned slice belongs to the caller.
func (p *Proxy) Served() []Served {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Served(nil), p.served...)
}

func (p *Proxy) recordServed(s Served) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.served = append(p.served, s)
}

// Close stops the listeners, in-flight streams and the ADS stream.
func (p *Proxy) Close() error {
	p.cancel()
	<-p.done
	p.mu.Lock()
	p.closed = true
	listeners := p.listeners
	p.listeners = map[string]*boundListener{}
	conns := p.grpcConns
	p.grpcConns = map[string]*grpc.ClientConn{}
	p.mu.Unlock()

	var errs []error
	for _, bl := range listeners {
		errs = append(errs, bl.close())
	}
	for _, c := range conns {
		errs = append(errs, c.Close())
	}
	p.h1.CloseIdleConnections()
	p.h2c.CloseIdleConnections()
	errs = append(errs, p.conn.Close())
	return errors.Join(errs...)
}
