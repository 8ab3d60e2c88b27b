package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// attributesKey is the one key of ProcessingRequest.attributes, whatever the filter is
// called (§1.2).
const attributesKey = "envoy.filters.http.ext_proc"

// kind names the oneof case of a ProcessingRequest or ProcessingResponse.
type kind int

const (
	kindNone kind = iota
	kindRequestHeaders
	kindResponseHeaders
	kindRequestBody
	kindResponseBody
	kindImmediate
	kindOther
)

func responseKind(r *v3procservicepb.ProcessingResponse) kind {
	switch r.GetResponse().(type) {
	case *v3procservicepb.ProcessingResponse_RequestHeaders:
		return kindRequestHeaders
	case *v3procservicepb.ProcessingResponse_ResponseHeaders:
		return kindResponseHeaders
	case *v3procservicepb.ProcessingResponse_RequestBody:
		return kindRequestBody
	case *v3procservicepb.ProcessingResponse_ResponseBody:
		return kindResponseBody
	case *v3procservicepb.ProcessingResponse_ImmediateResponse:
		return kindImmediate
	case nil:
		return kindNone
	}
	return kindOther
}

// recvResult is one Recv outcome of the ext_proc stream.
type recvResult struct {
	resp *v3procservicepb.ProcessingResponse
	err  error
}

// procFilter is one ext_proc filter instance on one HTTP request: one lazily opened gRPC
// stream (§1.1, §8.1).
type procFilter struct {
	px   *Proxy
	x    *exchange
	cfg  *extProcConfig
	mode *v3extprocpb.ProcessingMode // effective mode, changed by mode_override (§1.8)

	sendMu        sync.Mutex // guards the fields below and Send/CloseSend
	stream        v3procservicepb.ExternalProcessor_ProcessClient
	cancel        context.CancelFunc
	sentAny       bool
	reqAttrsSent  bool
	respAttrsSent bool

	replies      chan recvResult
	overrideUsed bool
	// complete means processing is over for this request: the stream was closed after an
	// immediate response, an error, a fail-open, or a server close.
	complete atomic.Bool
	// replaced is a body from CONTINUE_AND_REPLACE in the request headers reply.
	replaced []byte
}

func newProcFilter(x *exchange, c *extProcConfig) *procFilter {
	mode := proto.Clone(c.mode).(*v3extprocpb.ProcessingMode)
	return &procFilter{px: x.px, x: x, cfg: c, mode: mode, replies: make(chan recvResult, 64)}
}

// open starts the gRPC stream to the configured cluster. Callers hold sendMu.
func (f *procFilter) open(ctx context.Context) error {
	uc := f.x.st.upstreams[f.cfg.cluster]
	if uc == nil {
		return status.Errorf(codes.Internal, "ext_proc cluster %q not found", f.cfg.cluster)
	}
	h := uc.pick(nil, nil)
	if h == nil {
		return status.Errorf(codes.Unavailable, "ext_proc cluster %q has no healthy host", f.cfg.cluster)
	}
	conn, err := f.px.grpcConn(h.addr)
	if err != nil {
		return status.Errorf(codes.Internal, "ext_proc client: %v", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	for _, md := range f.cfg.initialMetadata {
		sctx = metadata.AppendToOutgoingContext(sctx, md.GetKey(), md.GetValue())
	}
	st, err := v3procservicepb.NewExternalProcessorClient(conn).Process(sctx)
	if err != nil {
		cancel()
		return err
	}
	f.stream, f.cancel = st, cancel
	f.px.stats.streams.Add(1)
	go f.recvLoop(sctx, st)
	return nil
}

func (f *procFilter) recvLoop(ctx context.Context, st v3procservicepb.ExternalProcessor_ProcessClient) {
	for {
		resp, err := st.Recv()
		select {
		case f.replies <- recvResult{resp, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) grpcConn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.grpcConns[addr]; c != nil {
		return c, nil
	}
	if p.closed {
		return nil, errors.New("proxy closed")
	}
	c, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	p.grpcConns[addr] = c
	return c, nil
}

// send adds the first-message fields and sends req: protocol_config on the stream's first
// message only, attributes on the first message of each direction, metadata_context always
// (§1.2, §8.2). A send error surfaces as the stream's status on Recv.
func (f *procFilter) send(ctx context.Context, req *v3procservicepb.ProcessingRequest, response bool) error {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	if f.complete.Load() {
		return errors.New("ext_proc stream closed")
	}
	if f.stream == nil {
		if err := f.open(ctx); err != nil {
			return err
		}
	}
	if !f.sentAny {
		f.sentAny = true
		req.ProtocolConfig = &v3procservicepb.ProtocolConfiguration{
			RequestBodyMode:                         f.mode.GetRequestBodyMode(),
			ResponseBodyMode:                        f.mode.GetResponseBodyMode(),
			SendBodyWithoutWaitingForHeaderResponse: f.cfg.sendBodyWithoutWait,
		}
	}
	f.addAttributes(req, response)
	req.MetadataContext = &v3corepb.Metadata{}
	if err := f.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func (f *procFilter) addAttributes(req *v3procservicepb.ProcessingRequest, response bool) {
	paths, sent := f.cfg.requestAttrs, &f.reqAttrsSent
	if response {
		paths, sent = f.cfg.responseAttrs, &f.respAttrsSent
	}
	if *sent || len(paths) == 0 {
		return
	}
	*sent = true
	fields := map[string]*structpb.Value{}
	for _, p := range paths {
		if v, ok := f.x.attribute(p); ok {
			fields[p] = v
		}
	}
	req.Attributes = map[string]*structpb.Struct{attributesKey: {Fields: fields}}
}

// exchange sends req and waits for its reply. It returns the reply, or a local reply to
// send, or neither when processing continues without ext_proc.
func (f *procFilter) exchange(ctx context.Context, req *v3procservicepb.ProcessingRequest,
	want kind, response bool) (*v3procservicepb.ProcessingResponse, *localReply) {
	if err := f.send(ctx, req, response); err != nil {
		return nil, f.streamFailed(err)
	}
	return f.await(ctx, want)
}

// await waits for exactly one reply of kind want (or an immediate response), with the
// message timer (§3.3, §8.5, §8.6).
func (f *procFilter) await(ctx context.Context, want kind) (*v3procservicepb.ProcessingResponse, *localReply) {
	t := time.NewTimer(f.cfg.messageTimeout)
	defer t.Stop()
	for {
		select {
		case r := <-f.replies:
			if r.err != nil {
				return nil, f.streamFailed(r.err)
			}
			if d := r.resp.GetOverrideMessageTimeout(); d != nil {
				f.overrideTimeout(t, d.AsDuration())
				continue
			}
			k := responseKind(r.resp)
			if k == want || k == kindImmediate && !f.cfg.disableImmediate {
				return r.resp, nil
			}
			f.px.stats.spurious.Add(1)
			return nil, f.fail(f.cfg.statusOnError, fmt.Sprintf("spurious_message_%d", k))
		case <-t.C:
			f.px.stats.timeouts.Add(1)
			// §2.2: a message timeout is a hard-coded 504, not status_on_error.
			return nil, f.fail(504, "ext_proc_error_per-message_timeout_exceeded")
		case <-ctx.Done():
			f.close()
			return nil, &localReply{status: 499, reset: true, details: "downstream_remote_disconnect"}
		}
	}
}

// overrideTimeout honours override_message_timeout once, within max_message_timeout (§1.5).
func (f *procFilter) overrideTimeout(t *time.Timer, d time.Duration) {
	if f.overrideUsed || f.cfg.maxMessageTimeout == 0 || d < time.Millisecond || d > f.cfg.maxMessageTimeout {
		return
	}
	f.overrideUsed = true
	t.Reset(d)
}

// streamFailed handles the end of the gRPC stream: an OK close continues without ext_proc,
// anything else is status_on_error or a fail-open (§3.3).
func (f *procFilter) streamFailed(err error) *localReply {
	if errors.Is(err, io.EOF) {
		f.close()
		return nil
	}
	f.px.stats.streamErrors.Add(1)
	st := status.Convert(err)
	return f.fail(f.cfg.statusOnError,
		fmt.Sprintf("ext_proc_error_gRPC_error_%d{%s}", st.Code(), st.Message()))
}

// fail closes the stream and either fails open (nil) or returns the local reply.
func (f *procFilter) fail(code int, details string) *localReply {
	f.close()
	f.px.log.Debug("ext_proc failure", "request_id", f.x.requestID, "details", details)
	if f.cfg.failureModeAllow {
		f.px.stats.failOpen.Add(1)
		return nil
	}
	return &localReply{status: code, details: details}
}

// close ends processing: CloseSend, then cancel (§8.1).
func (f *procFilter) close() {
	if f.complete.Swap(true) {
		return
	}
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	if f.stream != nil {
		_ = f.stream.CloseSend()
		f.cancel()
	}
}

// immediate builds the local reply of an ImmediateResponse (§1.6): a status below 200 becomes
// 200 and the headers pass the mutation rules; failures there are only logged.
func (f *procFilter) immediate(ir *v3procservicepb.ImmediateResponse) *localReply {
	f.px.stats.immediate.Add(1)
	f.close()
	code := int(ir.GetStatus().GetCode())
	if code < 200 {
		code = 200
	}
	var h headerMap
	if err := f.applyMutation(&h, ir.GetHeaders(), mutateOptions{}); err != nil {
		f.px.log.Debug("immediate response headers", "request_id", f.x.requestID, "err", err)
	}
	h.del(":status")
	return &localReply{status: code, headers: h, body: ir.GetBody(), details: ir.GetDetails()}
}

// applyCommon applies a CommonResponse's header mutation and, in the request direction,
// clear_route_cache (§1.7).
func (f *procFilter) applyCommon(cr *v3procservicepb.CommonResponse, h *headerMap, response bool,
	o mutateOptions) *localReply {
	if err := f.applyMutation(h, cr.GetHeaderMutation(), o); err != nil {
		// Mutation errors always fail closed (§3.3).
		f.close()
		return &localReply{status: f.cfg.statusOnError, details: err.Error()}
	}
	if !response {
		f.maybeClearRouteCache(cr)
	}
	return nil
}

func (f *procFilter) maybeClearRouteCache(cr *v3procservicepb.CommonResponse) {
	if f.x.inUpstream {
		// An upstream filter runs after routing; Envoy ignores the flag there (§1.7).
		return
	}
	hasMutation := cr.GetHeaderMutation() != nil
	switch f.cfg.routeCacheAction {
	case v3extprocpb.ExternalProcessor_RETAIN:
		return
	case v3extprocpb.ExternalProcessor_CLEAR:
		if !hasMutation {
			return
		}
	default:
		if !cr.GetClearRouteCache() {
			return
		}
		if !hasMutation {
			f.px.stats.clearIgnored.Add(1)
			return
		}
	}
	f.px.stats.cleared.Add(1)
	f.x.matchRoute()
}

// applyModeOverride honours mode_override on a headers reply (§1.8).
func (f *procFilter) applyModeOverride(resp *v3procservicepb.ProcessingResponse) {
	mo := resp.GetModeOverride()
	if mo == nil || !f.cfg.allowModeOverride || f.cfg.sendBodyWithoutWait {
		return
	}
	m, err := effectiveMode(f.cfg.mode, mo, true)
	if err != nil {
		f.px.log.Debug("ignoring mode_override", "request_id", f.x.requestID, "err", err)
		return
	}
	if len(f.cfg.allowedOverrideModes) > 0 && !f.overrideAllowed(m) {
		f.px.log.Debug("mode_override not in allowed_override_modes", "request_id", f.x.requestID)
		return
	}
	f.mode = m
}

func (f *procFilter) overrideAllowed(m *v3extprocpb.ProcessingMode) bool {
	for _, a := range f.cfg.allowedOverrideModes {
		e, err := effectiveMode(f.cfg.mode, a, true)
		if err == nil && e.GetResponseHeaderMode() == m.GetResponseHeaderMode() &&
			e.GetRequestBodyMode() == m.GetRequestBodyMode() &&
			e.GetResponseBodyMode() == m.GetResponseBodyMode() {
			return true
		}
	}
	return false
}

func toProtoHeaders(h headerMap) *v3corepb.HeaderMap {
	out := &v3corepb.HeaderMap{}
	for _, e := range h {
		// Values travel only in raw_value; value stays empty (§1.2).
		out.Headers = append(out.Headers, &v3corepb.HeaderValue{Key: e.key, RawValue: []byte(e.value)})
	}
	return out
}

// hostMetadataExpr is the one CEL selection the stand-in evaluates: a string in the picked
// endpoint's filter metadata.
var hostMetadataExpr = regexp.MustCompile(`^xds\.upstream_host_metadata\.filter_metadata\['([^']*)'\]\['([^']*)'\]$`)

// attribute evaluates a plain attribute path, or a key of the upstream host's filter
// metadata (§2.3). Anything else is absent, as a failed CEL expression is in Envoy.
//
// TODO: general CEL expressions (request.headers['x'], arithmetic) are not evaluated, so
// they reach the processor as absent attributes where Envoy would send their values.
func (x *exchange) attribute(path string) (*structpb.Value, bool) {
	if m := hostMetadataExpr.FindStringSubmatch(path); m != nil {
		if x.host == nil {
			return nil, false
		}
		v, ok := x.host.metadata.GetFilterMetadata()[m[1]].GetFields()[m[2]]
		return v, ok
	}
	str := func(s string, ok bool) (*structpb.Value, bool) { return structpb.NewStringValue(s), ok }
	switch path {
	case "request.path":
		return str(x.headers.get(":path"))
	case "request.url_path":
		p := x.headers.value(":path")
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		return str(p, true)
	case "request.method":
		return str(x.headers.get(":method"))
	case "request.host":
		return str(x.headers.get(":authority"))
	case "request.scheme":
		return str(x.headers.get(":scheme"))
	case "request.id":
		return str(x.headers.get("x-request-id"))
	case "request.protocol":
		return str("HTTP/1.1", true)
	case "upstream.address":
		return str(x.upstream, x.upstream != "")
	case "xds.cluster_name":
		return str(x.cluster, x.cluster != "")
	case "xds.route_name":
		return str(x.route.nameOr())
	case "xds.virtual_host_name":
		if x.vh == nil {
			return nil, false
		}
		return str(x.vh.name, true)
	case "xds.upstream_host_metadata":
		// A message becomes its text form (§2.3); the stand-in does not build that.
		return nil, false
	case "response.code":
		if x.respStatus == 0 {
			return nil, false
		}
		return structpb.NewNumberValue(float64(x.respStatus)), true
	}
	return nil, false
}

func (r *route) nameOr() (string, bool) {
	if r == nil {
		return "", false
	}
	return r.name, true
}
