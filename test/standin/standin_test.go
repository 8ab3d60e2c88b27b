package standin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3previoushostspb "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type replies = []*v3procservicepb.ProcessingResponse

var bodyBuffered = &v3extprocpb.ProcessingMode{RequestBodyMode: v3extprocpb.ProcessingMode_BUFFERED}

// §1.2: values travel only in raw_value, keys are lower-case, pseudo-headers included.
func TestHeadersSentInRawValueOnly(t *testing.T) {
	fp := &fakeProc{}
	e, _ := procEnv(t, procConfig(nil), fp, nil)
	e.do("GET", "/x", "", map[string]string{"X-Custom": "v1"})

	got := map[string]string{}
	for _, h := range fp.messages(0)[0].GetRequestHeaders().GetHeaders().GetHeaders() {
		if h.GetValue() != "" {
			t.Errorf("header %q has value %q, want it only in raw_value", h.GetKey(), h.GetValue())
		}
		got[h.GetKey()] = string(h.GetRawValue())
	}
	for k, want := range map[string]string{":path": "/x", ":method": "GET", "x-custom": "v1", ":scheme": "http"} {
		if got[k] != want {
			t.Errorf("request_headers[%q] = %q, want %q", k, got[k], want)
		}
	}
	if got[":authority"] == "" || got["x-request-id"] == "" {
		t.Errorf("request_headers lack :authority or generated x-request-id: %v", got)
	}
}

// §1.7: only raw_value is read, so a header set through `value` alone becomes empty.
func TestValueOnlyHeaderBecomesEmpty(t *testing.T) {
	fp := &fakeProc{handle: func(ctx context.Context, req *v3procservicepb.ProcessingRequest) (replies, error) {
		if req.GetRequestHeaders() == nil {
			return continueAll(ctx, req)
		}
		return replies{continueFor(req, &v3procservicepb.CommonResponse{HeaderMutation: &v3procservicepb.HeaderMutation{
			SetHeaders: []*v3corepb.HeaderValueOption{
				{Header: &v3corepb.HeaderValue{Key: "x-value-only", Value: "lost"}},
				setHeader("x-raw", "kept"),
			}}})}, nil
	}}
	var seen http.Header
	e, _ := procEnv(t, procConfig(nil), fp, func(w http.ResponseWriter, r *http.Request) { seen = r.Header.Clone() })
	e.do("GET", "/", "", nil)
	if v, ok := seen["X-Value-Only"]; !ok || v[0] != "" {
		t.Errorf("upstream x-value-only = %q (present %v), want present and empty", v, ok)
	}
	if got := seen.Get("X-Raw"); got != "kept" {
		t.Errorf("upstream x-raw = %q, want %q", got, "kept")
	}
}

// rerouteTopology routes x-backend: b to cluster b, everything else to a.
func rerouteEnv(t *testing.T, withMutation bool) (*env, *upstream, *upstream) {
	t.Helper()
	fp := &fakeProc{handle: func(ctx context.Context, req *v3procservicepb.ProcessingRequest) (replies, error) {
		if req.GetRequestHeaders() == nil {
			return continueAll(ctx, req)
		}
		cr := &v3procservicepb.CommonResponse{ClearRouteCache: true}
		if withMutation {
			cr.HeaderMutation = &v3procservicepb.HeaderMutation{
				SetHeaders: []*v3corepb.HeaderValueOption{setHeader("x-backend", "b")}}
		}
		return replies{continueFor(req, cr)}, nil
	}}
	ua, ub := newUpstream(t, "a", nil), newUpstream(t, "b", nil)
	toB := prefixRoute("/", "b")
	toB.Match.Headers = []*v3routepb.HeaderMatcher{{Name: "x-backend",
		//lint:ignore SA1019 the stand-in must honour the legacy exact_match Envoy still accepts
		HeaderMatchSpecifier: &v3routepb.HeaderMatcher_ExactMatch{ExactMatch: "b"}}}
	tp := &topology{
		extProc:  procConfig(nil),
		procAddr: serveGRPC(t, registerProc(fp)),
		routes:   []*v3routepb.Route{toB, prefixRoute("/", "a")},
		clusters: map[string][]endpoint{"a": {{addr: ua.addr()}}, "b": {{addr: ub.addr()}}},
	}
	return newEnv(t, tp), ua, ub
}

// §1.7, §2.4: clear_route_cache without a header_mutation in the same reply is ignored.
func TestClearRouteCacheWithoutHeaderMutationIgnored(t *testing.T) {
	e, _, _ := rerouteEnv(t, false)
	r := e.do("GET", "/", "", nil)
	if got := r.header.Get("X-Served-By"); got != "a" {
		t.Errorf("served by %q, want a", got)
	}
	if got := e.proxy.Stats().ClearRouteCacheIgnored; got != 1 {
		t.Errorf("ClearRouteCacheIgnored = %d, want 1", got)
	}
}

// §1.7: clear_route_cache with a header mutation re-matches the route on the new headers.
func TestClearRouteCacheWithHeaderMutationReroutes(t *testing.T) {
	e, _, _ := rerouteEnv(t, true)
	r := e.do("GET", "/", "", nil)
	if got := r.header.Get("X-Served-By"); got != "b" {
		t.Errorf("served by %q, want b", got)
	}
	if got := e.proxy.Stats().RouteCacheCleared; got != 1 {
		t.Errorf("RouteCacheCleared = %d, want 1", got)
	}
}

// blockHeaders never answers request_headers (it waits for the stream to end).
func blockHeaders(ctx context.Context, req *v3procservicepb.ProcessingRequest) (replies, error) {
	if req.GetRequestHeaders() != nil {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return continueAll(ctx, req)
}

// §2.2, §3.3: a late reply gives 504, or fail-open with failure_mode_allow.
func TestMessageTimeout(t *testing.T) {
	for _, tt := range []struct {
		name     string
		failOpen bool
		want     int
	}{{"fail-closed gives 504", false, 504}, {"fail-open continues", true, 200}} {
		t.Run(tt.name, func(t *testing.T) {
			ep := procConfig(nil)
			ep.MessageTimeout = durationpb.New(50e6)
			ep.FailureModeAllow = tt.failOpen
			e, _ := procEnv(t, ep, &fakeProc{handle: blockHeaders}, nil)
			if r := e.do("GET", "/", "", nil); r.status != tt.want {
				t.Errorf("status = %d, want %d", r.status, tt.want)
			}
			s := e.proxy.Stats()
			if s.MessageTimeouts != 1 || (s.FailureModeAllowed == 1) != tt.failOpen {
				t.Errorf("MessageTimeouts = %d, FailureModeAllowed = %d", s.MessageTimeouts, s.FailureModeAllowed)
			}
		})
	}
}

// §3.3: a non-OK stream status gives status_on_error, or fail-open; an OK close continues.
func TestStreamError(t *testing.T) {
	for _, tt := range []struct {
		name     string
		err      error
		failOpen bool
		want     int
	}{
		{"non-OK fail-closed", status.Error(codes.Internal, "boom"), false, 500},
		{"non-OK fail-open", status.Error(codes.Internal, "boom"), true, 200},
		{"OK close continues", nil, false, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ep := procConfig(nil)
			ep.FailureModeAllow = tt.failOpen
			fp := &fakeProc{handle: func(context.Context, *v3procservicepb.ProcessingRequest) (replies, error) {
				if tt.err == nil {
					return nil, errCloseOK
				}
				return nil, tt.err
			}}
			e, _ := procEnv(t, ep, fp, nil)
			if r := e.do("GET", "/", "", nil); r.status != tt.want {
				t.Errorf("status = %d, want %d", r.status, tt.want)
			}
		})
	}
}

// §1.5, §3.3: a reply of the wrong kind is spurious: status_on_error (500).
func TestSpuriousReply(t *testing.T) {
	fp := &fakeProc{handle: func(_ context.Context, req *v3procservicepb.ProcessingRequest) (replies, error) {
		wrong := &v3procservicepb.ProcessingRequest{Request: &v3procservicepb.ProcessingRequest_ResponseHeaders{}}
		return replies{continueFor(wrong, nil)}, nil
	}}
	e, _ := procEnv(t, procConfig(nil), fp, nil)
	if r := e.do("GET", "/", "", nil); r.status != 500 {
		t.Errorf("status = %d, want 500", r.status)
	}
	if got := e.proxy.Stats().SpuriousMessages; got != 1 {
		t.Errorf("SpuriousMessages = %d, want 1", got)
	}
}

// §1.6: status below 200 becomes 200; content-type defaults to text/plain only when unset;
// content-length is set from the body.
func TestImmediateResponse(t *testing.T) {
	for _, tt := range []struct {
		name      string
		code      v3typepb.StatusCode
		headers   []*v3corepb.HeaderValueOption
		wantCode  int
		wantCType string
	}{
		{"defaults", v3typepb.StatusCode_Continue, nil, 200, "text/plain"},
		{"keeps content-type", v3typepb.StatusCode_TooManyRequests,
			[]*v3corepb.HeaderValueOption{setHeader("content-type", "text/event-stream")}, 429, "text/event-stream"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fp := &fakeProc{handle: func(context.Context, *v3procservicepb.ProcessingRequest) (replies, error) {
				return replies{{Response: &v3procservicepb.ProcessingResponse_ImmediateResponse{
					ImmediateResponse: &v3procservicepb.ImmediateResponse{
						Status:  &v3typepb.HttpStatus{Code: tt.code},
						Headers: &v3procservicepb.HeaderMutation{SetHeaders: tt.headers},
						Body:    []byte("data: hi\n\n"),
					}}}}, nil
			}}
			e, _ := procEnv(t, procConfig(nil), fp, nil)
			r := e.do("GET", "/", "", nil)
			got := []string{fmt.Sprint(r.status), r.header.Get("Content-Type"), r.header.Get("Content-Length"), r.body}
			want := []string{fmt.Sprint(tt.wantCode), tt.wantCType, "10", "data: hi\n\n"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("immediate response (-want +got):\n%s", diff)
			}
		})
	}
}

// bodyReplacer answers request_body with a new body and an optional content-length update.
func bodyReplacer(newBody string, setLength bool,
) func(context.Context, *v3procservicepb.ProcessingRequest) (replies, error) {
	return func(ctx context.Context, req *v3procservicepb.ProcessingRequest) (replies, error) {
		if req.GetRequestBody() == nil {
			return continueAll(ctx, req)
		}
		cr := &v3procservicepb.CommonResponse{BodyMutation: &v3procservicepb.BodyMutation{
			Mutation: &v3procservicepb.BodyMutation_Body{Body: []byte(newBody)}}}
		if setLength {
			cr.HeaderMutation = &v3procservicepb.HeaderMutation{SetHeaders: []*v3corepb.HeaderValueOption{
				setHeader("content-length", fmt.Sprint(len(newBody)))}}
		}
		return replies{continueFor(req, cr)}, nil
	}
}

// §1.7: a buffered body mutation whose length differs from the held content-length is a
// 500, unless the same BodyResponse updates content-length.
func TestContentLengthMismatch(t *testing.T) {
	for _, tt := range []struct {
		name      string
		setLength bool
		want      int
	}{{"mismatch gives 500", false, 500}, {"updated length passes", true, 200}} {
		t.Run(tt.name, func(t *testing.T) {
			fp := &fakeProc{handle: bodyReplacer("longer body", tt.setLength)}
			e, _ := procEnv(t, procConfig(bodyBuffered), fp, nil)
			r := e.do("POST", "/", "short", nil)
			if r.status != tt.want {
				t.Errorf("status = %d, want %d", r.status, tt.want)
			}
			if tt.want == 200 && r.body != "a / longer body" {
				t.Errorf("upstream saw %q, want the mutated body", r.body)
			}
		})
	}
}

// §3.1: a BUFFERED request body over the buffer limit is a 413 and never reaches ext_proc.
func TestBufferedOverLimit(t *testing.T) {
	fp := &fakeProc{}
	ua := newUpstream(t, "a", nil)
	tp := &topology{extProc: procConfig(bodyBuffered), procAddr: serveGRPC(t, registerProc(fp)),
		routes: []*v3routepb.Route{prefixRoute("/", "a")}, clusters: map[string][]endpoint{"a": {{addr: ua.addr()}}},
		bufferLimit: 16}
	e := newEnv(t, tp)
	if r := e.do("POST", "/", strings.Repeat("x", 64), nil); r.status != 413 {
		t.Errorf("status = %d, want 413", r.status)
	}
	for _, m := range fp.messages(0) {
		if m.GetRequestBody() != nil {
			t.Errorf("ext_proc received a request_body")
		}
	}
}

// §1.4, §1.8, §4: mode_override to STREAMED on text/event-stream; one BR per chunk in order;
// SSE events split across chunks reach the client intact.
func TestStreamedSSE(t *testing.T) {
	events := []string{"data: one\n\n", "data: tw", "o\n\ndata: three\n\n", "data: [DONE]\n\n"}
	fp := &fakeProc{handle: func(ctx context.Context, req *v3procservicepb.ProcessingRequest) (replies, error) {
		if rh := req.GetResponseHeaders(); rh != nil {
			r := continueFor(req, nil)
			r.ModeOverride = &v3extprocpb.ProcessingMode{ResponseBodyMode: v3extprocpb.ProcessingMode_STREAMED}
			return replies{r}, nil
		}
		if rb := req.GetResponseBody(); rb != nil {
			upper := []byte(strings.ToUpper(string(rb.GetBody())))
			return replies{continueFor(req, &v3procservicepb.CommonResponse{
				BodyMutation: &v3procservicepb.BodyMutation{
					Mutation: &v3procservicepb.BodyMutation_Body{Body: upper}}})}, nil
		}
		return continueAll(ctx, req)
	}}
	ep := procConfig(nil)
	ep.AllowModeOverride = true
	step := make(chan struct{})
	e, _ := procEnv(t, ep, fp, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range events {
			fmt.Fprint(w, ev)
			w.(http.Flusher).Flush()
			select { // the client must see this chunk before the next is written
			case <-step:
			case <-r.Context().Done():
				return
			}
		}
	})
	req, _ := http.NewRequestWithContext(testContext(t), "GET", e.url+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	var got strings.Builder
	for _, ev := range events {
		buf := make([]byte, len(ev))
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatalf("reading chunk %q: %v", ev, err)
		}
		got.Write(buf)
		step <- struct{}{}
	}
	if rest, _ := io.ReadAll(resp.Body); len(rest) > 0 {
		got.Write(rest)
	}
	if want := strings.ToUpper(strings.Join(events, "")); got.String() != want {
		t.Errorf("client got %q, want %q", got.String(), want)
	}
	if diff := cmp.Diff([]int{11, 8, 16, 14, 0}, bodySizes(fp.messages(0))); diff != "" {
		t.Errorf("response_body chunk sizes, one per upstream write plus the eos frame (-want +got):\n%s", diff)
	}
}

// §1.2: protocol_config only on the first message; attributes on the first message of each
// direction, with upstream.address among the response attributes (§2.3).
func TestFirstMessageFields(t *testing.T) {
	ep := procConfig(bodyBuffered)
	ep.RequestAttributes = []string{"request.path", "request.method", "xds.cluster_name",
		"upstream.address", "bogus.attr"}
	ep.ResponseAttributes = []string{"upstream.address", "response.code"}
	fp := &fakeProc{}
	e, tp := procEnv(t, ep, fp, nil)
	e.do("POST", "/p", "body", nil)

	msgs := fp.messages(0)
	var kinds []string
	for i, m := range msgs {
		if (m.GetProtocolConfig() != nil) != (i == 0) {
			t.Errorf("message %d protocol_config = %v", i, m.GetProtocolConfig())
		}
		if m.GetMetadataContext() == nil {
			t.Errorf("message %d lacks metadata_context", i)
		}
		kinds = append(kinds, fmt.Sprintf("%T:%d", m.GetRequest(), len(m.GetAttributes())))
	}
	want := []string{"*ext_procv3.ProcessingRequest_RequestHeaders:1", "*ext_procv3.ProcessingRequest_RequestBody:0",
		"*ext_procv3.ProcessingRequest_ResponseHeaders:1", "*ext_procv3.ProcessingRequest_ResponseBody:0"}
	if len(kinds) == 3 { // response body mode NONE: no response_body message
		want = want[:3]
	}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	reqAttrs := msgs[0].GetAttributes()[attributesKey].AsMap()
	wantReq := map[string]any{"request.path": "/p", "request.method": "POST", "xds.cluster_name": "a"}
	if diff := cmp.Diff(wantReq, reqAttrs); diff != "" {
		t.Errorf("request attributes (-want +got):\n%s", diff)
	}
	respAttrs := msgs[2].GetAttributes()[attributesKey].AsMap()
	wantResp := map[string]any{"upstream.address": tp.clusters["a"][0].addr, "response.code": float64(200)}
	if diff := cmp.Diff(wantResp, respAttrs); diff != "" {
		t.Errorf("response attributes (-want +got):\n%s", diff)
	}
}

// Weighted clusters (RDS) and endpoint weights (EDS) split traffic and change live.
func TestWeightsSplitTraffic(t *testing.T) {
	ua, ub, uc := newUpstream(t, "a", nil), newUpstream(t, "b", nil), newUpstream(t, "c", nil)
	weighted := func(wa, wb uint32) *v3routepb.Route {
		r := prefixRoute("/", "")
		wc := &v3routepb.WeightedCluster{Clusters: []*v3routepb.WeightedCluster_ClusterWeight{
			{Name: "a", Weight: wrapperspb.UInt32(wa)}, {Name: "bc", Weight: wrapperspb.UInt32(wb)}}}
		r.GetRoute().ClusterSpecifier = &v3routepb.RouteAction_WeightedClusters{WeightedClusters: wc}
		return r
	}
	tp := &topology{routes: []*v3routepb.Route{weighted(1, 0)}, clusters: map[string][]endpoint{
		"a": {{addr: ua.addr()}}, "bc": {{addr: ub.addr(), weight: 3}, {addr: uc.addr(), weight: 1}}}}
	e := newEnv(t, tp)
	count := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			got[e.do("GET", "/", "", nil).header.Get("X-Served-By")]++
		}
		return got
	}
	if diff := cmp.Diff(map[string]int{"a": 8}, count(8)); diff != "" {
		t.Errorf("weights a=1,bc=0 (-want +got):\n%s", diff)
	}

	// Live RDS update: all to bc, where EDS weights 3:1 give exactly 6:2 under weighted round robin.
	tp.routes = []*v3routepb.Route{weighted(0, 1)}
	e.push(tp)
	waitFor(t, "route update", func() bool { return e.do("GET", "/", "", nil).header.Get("X-Served-By") != "a" })
	if diff := cmp.Diff(map[string]int{"b": 6, "c": 2}, count(8)); diff != "" {
		t.Errorf("endpoint weights 3:1 (-want +got):\n%s", diff)
	}
}

// Retry on 5xx with retry_host_predicate previous_hosts tries another host.
func TestRetryToAnotherHostOn5xx(t *testing.T) {
	bad := newUpstream(t, "bad", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	good := newUpstream(t, "good", nil)
	r := prefixRoute("/", "a")
	r.GetRoute().RetryPolicy = &v3routepb.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1),
		RetryHostPredicate: []*v3routepb.RetryPolicy_RetryHostPredicate{{
			Name: "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &v3routepb.RetryPolicy_RetryHostPredicate_TypedConfig{
				TypedConfig: mustAny(t, &v3previoushostspb.PreviousHostsPredicate{})}}}}
	e := newEnv(t, &topology{routes: []*v3routepb.Route{r},
		clusters: map[string][]endpoint{"a": {{addr: bad.addr()}, {addr: good.addr()}}}})
	for range 4 {
		if res := e.do("GET", "/", "", nil); res.status != 200 || res.header.Get("X-Served-By") != "good" {
			t.Errorf("status %d from %q, want 200 from good", res.status, res.header.Get("X-Served-By"))
		}
	}
	if got := bad.hits.Load(); got == 0 {
		t.Errorf("bad host never tried; the retry path was not exercised")
	}
}

// A resource that fails validation is NACKed and the last good config keeps serving.
func TestNackKeepsLastGoodConfig(t *testing.T) {
	ua := newUpstream(t, "a", nil)
	tp := &topology{routes: []*v3routepb.Route{prefixRoute("/", "a")},
		clusters: map[string][]endpoint{"a": {{addr: ua.addr()}}}}
	e := newEnv(t, tp)

	// An endpoint weight of 0 violates the PGV rule load_balancing_weight >= 1.
	bad := tp.loadAssignment(t, "a", []endpoint{{addr: ua.addr()}})
	bad.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
	e.pushRaw(bad)
	waitFor(t, "a NACK", func() bool { return e.proxy.Stats().Nacks > 0 })
	if r := e.do("GET", "/", "", nil); r.status != 200 {
		t.Errorf("status after NACK = %d, want 200 from the last good config", r.status)
	}
	e.push(tp) // stop the NACK resend loop of the snapshot cache
}

func bodySizes(msgs []*v3procservicepb.ProcessingRequest) []int {
	var out []int
	for _, m := range msgs {
		if rb := m.GetResponseBody(); rb != nil {
			out = append(out, len(rb.GetBody()))
		}
	}
	return out
}
