package extproc

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3procfilterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/metadata"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/internal/openai"
	"github.com/phochat/phogate/internal/routeheaders"
	"github.com/phochat/phogate/routing"
)

// An attempt is one upstream ext_proc stream: the ext_proc filter of a model cluster runs
// once per upstream attempt, after Envoy has picked the endpoint, and tells the server which
// provider that endpoint belongs to (through its metadata). The server then makes the
// provider's rewrites for this attempt alone: path, Host, credential and, when the provider
// names the model differently, the model in the body. A retry that Envoy sends to another
// provider gets that provider's rewrites, which is what makes cross-provider fallback work.
//
// Envoy's upstream filter is expected to run with request headers SEND, request body
// BUFFERED (or NONE when no provider of the cluster renames the model), response headers
// SEND, allow_all_routing mutation rules, the request attribute
// routeheaders.ProviderAttribute and the response attribute "upstream.address".
type attempt struct {
	s     *Server
	log   *slog.Logger
	start time.Time
	done  bool

	requestID string
	provider  *config.Provider
	model     *config.Model
	upstream  string // the provider's name for the model
	hasLength bool   // the request carries content-length
}

// isUpstreamStream reports whether the stream comes from the upstream filter, which says so
// in its gRPC initial metadata.
func isUpstreamStream(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(routeheaders.FilterPhase)
	return len(v) > 0 && v[0] == routeheaders.PhaseUpstream
}

// processAttempt handles one upstream ext_proc stream.
func (s *Server) processAttempt(ps v3procservicepb.ExternalProcessor_ProcessServer) error {
	a := &attempt{s: s, log: s.log, start: s.now()}
	for {
		req, err := ps.Recv()
		if err != nil {
			return s.recvEnd(a.log, err)
		}
		resp, err := a.handle(req)
		if err != nil {
			s.metrics.streamErrors.WithLabelValues(reasonBadMessage).Inc()
			a.log.Debug("bad upstream ext_proc message", "err", err)
			return err
		}
		if err := ps.Send(resp); err != nil {
			s.metrics.streamErrors.WithLabelValues(reasonSend).Inc()
			return err
		}
		if a.done {
			return nil
		}
	}
}

func (a *attempt) handle(req *v3procservicepb.ProcessingRequest) (*v3procservicepb.ProcessingResponse, error) {
	switch r := req.GetRequest().(type) {
	case *v3procservicepb.ProcessingRequest_RequestHeaders:
		return a.onRequestHeaders(req, r.RequestHeaders), nil
	case *v3procservicepb.ProcessingRequest_RequestBody:
		return a.onRequestBody(r.RequestBody), nil
	case *v3procservicepb.ProcessingRequest_ResponseHeaders:
		return a.onResponseHeaders(req, r.ResponseHeaders), nil
	case *v3procservicepb.ProcessingRequest_ResponseBody:
		a.done = true
		return emptyResponseBody(), nil
	case *v3procservicepb.ProcessingRequest_RequestTrailers:
		return emptyTrailers(false), nil
	case *v3procservicepb.ProcessingRequest_ResponseTrailers:
		return emptyTrailers(true), nil
	}
	return nil, fmt.Errorf("unexpected ext_proc message %s", processingRequestKind(req))
}

// onRequestHeaders rewrites path, Host and credential for the attempt's provider.
func (a *attempt) onRequestHeaders(req *v3procservicepb.ProcessingRequest,
	h *v3procservicepb.HttpHeaders) *v3procservicepb.ProcessingResponse {
	var path, model string
	for _, hv := range h.GetHeaders().GetHeaders() {
		v := headerValue(hv.GetRawValue(), hv.GetValue())
		switch hv.GetKey() {
		case ":path":
			path = v
		case routeheaders.Model:
			model = v
		case "x-request-id":
			a.requestID = v
		case "content-length":
			a.hasLength = true
		}
	}
	if a.requestID != "" {
		a.log = a.s.log.With("request_id", a.requestID)
	}
	if herr := a.resolve(attribute(req, routeheaders.ProviderAttribute), model); herr != nil {
		// Only a config mismatch between Envoy and phogate gets here. The answer is a 502 so
		// that the route may retry another provider.
		a.done = true
		a.log.Warn("upstream attempt without a usable provider", "err", herr.err.Message)
		return immediate(herr.status, herr.err.Body(), a.requestID, "phogate_no_provider")
	}

	p := a.provider
	hm := &v3procservicepb.HeaderMutation{
		SetHeaders: []*v3corepb.HeaderValueOption{
			setHeader(":authority", p.HostHeader()),
			setHeader(":path", providerPath(p, path)),
		},
	}
	addAuth(hm, p)
	resp := continueRequestHeaders(&v3procservicepb.CommonResponse{HeaderMutation: hm})
	if a.upstream == a.model.Name || h.GetEndOfStream() {
		// Nothing to change in the body: let it through without sending it here.
		resp.ModeOverride = &v3procfilterpb.ProcessingMode{
			ResponseHeaderMode: v3procfilterpb.ProcessingMode_SEND,
			RequestBodyMode:    v3procfilterpb.ProcessingMode_NONE,
			ResponseBodyMode:   v3procfilterpb.ProcessingMode_NONE,
		}
	}
	return resp
}

// resolve finds the provider and the model of the attempt.
func (a *attempt) resolve(provider, model string) *httpError {
	noProvider := func(msg string) *httpError {
		return &httpError{502, &openai.Error{Message: msg, Type: openai.TypeServer,
			Code: openai.CodeNoProvider}}
	}
	p, ok := a.s.cfg.Provider(provider)
	if !ok {
		return noProvider(fmt.Sprintf("the endpoint names no configured provider (%q)",
			truncate(provider, 100)))
	}
	m, ok := a.s.cfg.Model(model)
	if !ok {
		return noProvider(fmt.Sprintf("the request names no configured model (%q)", truncate(model, 100)))
	}
	pm, ok := p.ModelFor(m.Name)
	if !ok {
		return noProvider(fmt.Sprintf("the provider %q does not serve the model %q", p.Name, m.Name))
	}
	a.provider, a.model, a.upstream = p, m, pm.Upstream()
	return nil
}

// providerPath maps the client's "/v1/..." path to the provider's base path.
func providerPath(p *config.Provider, path string) string {
	if rest, ok := strings.CutPrefix(path, routeheaders.ClientPathPrefix); ok {
		return p.PathPrefix() + "/" + rest
	}
	return path
}

// onRequestBody renames the model to the provider's name for it. The headers are still
// held, so content-length can follow the new body (envoy-notes §1.7).
func (a *attempt) onRequestBody(b *v3procservicepb.HttpBody) *v3procservicepb.ProcessingResponse {
	if a.provider == nil || a.upstream == a.model.Name {
		return continueRequestBody(nil)
	}
	body, err := openai.SetModel(b.GetBody(), a.upstream)
	if err != nil {
		// The listener filter parsed this body already; leave it as it is.
		a.log.Warn("renaming the model for the provider", "provider", a.provider.Name, "err", err)
		return continueRequestBody(nil)
	}
	cr := &v3procservicepb.CommonResponse{
		BodyMutation: &v3procservicepb.BodyMutation{
			Mutation: &v3procservicepb.BodyMutation_Body{Body: body},
		},
	}
	if a.hasLength {
		cr.HeaderMutation = &v3procservicepb.HeaderMutation{
			SetHeaders: []*v3corepb.HeaderValueOption{
				setHeader("content-length", strconv.Itoa(len(body))),
			},
		}
	}
	return continueRequestBody(cr)
}

// onResponseHeaders names the provider in the answer and reports a failed or rate-limited
// attempt to the observer: the listener filter sees only the attempt that answered the
// client, so a failure that a retry hid would otherwise never count against its endpoint.
func (a *attempt) onResponseHeaders(req *v3procservicepb.ProcessingRequest,
	h *v3procservicepb.HttpHeaders) *v3procservicepb.ProcessingResponse {
	a.done = true
	var status int
	for _, hv := range h.GetHeaders().GetHeaders() {
		if hv.GetKey() == ":status" {
			status, _ = strconv.Atoi(headerValue(hv.GetRawValue(), hv.GetValue()))
		}
	}
	if a.provider == nil {
		return continueResponseHeaders(nil)
	}
	o := routing.Observation{Model: a.model.Name, Provider: a.provider.Name, Status: status,
		Endpoint: attribute(req, "upstream.address")}
	if a.s.observer != nil && (o.Failed() || o.RateLimited()) {
		o.At = a.s.now()
		o.TTFB = max(o.At.Sub(a.start), 0)
		o.Total = o.TTFB
		a.s.observer.Observe(o)
	}
	a.s.metrics.attempts.WithLabelValues(a.provider.Name, strconv.Itoa(status)).Inc()
	if o.Failed() || o.RateLimited() {
		a.log.Debug("upstream attempt failed", "provider", a.provider.Name, "status", status,
			"endpoint", o.Endpoint)
	}
	return continueResponseHeaders(&v3procservicepb.CommonResponse{
		HeaderMutation: &v3procservicepb.HeaderMutation{
			SetHeaders: []*v3corepb.HeaderValueOption{setHeader(routeheaders.Provider, a.provider.Name)},
		},
	})
}

// attribute reads one string attribute that Envoy evaluated for this message
// (envoy-notes §1.2, §2.3).
func attribute(req *v3procservicepb.ProcessingRequest, name string) string {
	return req.GetAttributes()[attributesKey].GetFields()[name].GetStringValue()
}

// addAuth replaces the client's credential with the provider's. The client's authorization
// header is never forwarded: it is overwritten by the provider's key or removed.
func addAuth(hm *v3procservicepb.HeaderMutation, p *config.Provider) {
	key := p.APIKey.Reveal()
	switch {
	case key == "":
		hm.RemoveHeaders = append(hm.RemoveHeaders, "authorization")
		if p.AuthHeader != "authorization" {
			hm.RemoveHeaders = append(hm.RemoveHeaders, p.AuthHeader)
		}
	case p.AuthHeader == "authorization":
		hm.SetHeaders = append(hm.SetHeaders, setHeader("authorization", "Bearer "+key))
	default:
		hm.RemoveHeaders = append(hm.RemoveHeaders, "authorization")
		hm.SetHeaders = append(hm.SetHeaders, setHeader(p.AuthHeader, key))
	}
}
