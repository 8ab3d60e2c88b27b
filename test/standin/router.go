package standin

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// matchRoute resolves the virtual host and route for the current headers and picks the
// cluster; weighted clusters are chosen at random by weight, at match time as in Envoy.
func (x *exchange) matchRoute() {
	x.vh, x.route, x.cluster = nil, nil, ""
	if x.rc == nil {
		return
	}
	x.vh = x.rc.matchHost(x.headers.value(":authority"))
	if x.vh == nil {
		return
	}
	for _, r := range x.vh.routes {
		if r.matches(x.headers) {
			x.route, x.cluster = r, r.pickCluster()
			return
		}
	}
}

// matchHost picks the virtual host: exact domain first, then suffix/prefix wildcards, then "*".
func (rc *routeConfig) matchHost(authority string) *virtualHost {
	host := strings.ToLower(authority)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var wildcard, star *virtualHost
	for _, vh := range rc.vhosts {
		for _, d := range vh.domains {
			d = strings.ToLower(d)
			switch {
			case d == host || d == strings.ToLower(authority):
				return vh
			case d == "*":
				star = cmpOr(star, vh)
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]),
				strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]):
				wildcard = cmpOr(wildcard, vh)
			}
		}
	}
	return cmpOr(wildcard, star)
}

func cmpOr(a, b *virtualHost) *virtualHost {
	if a != nil {
		return a
	}
	return b
}

func (r *route) matches(h headerMap) bool {
	path := h.value(":path")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if r.hasPath && path != r.path || !r.hasPath && !strings.HasPrefix(path, r.prefix) {
		return false
	}
	for _, hm := range r.headers {
		if matchHeader(hm, h) == hm.GetInvertMatch() {
			return false
		}
	}
	return true
}

func matchHeader(hm *v3routepb.HeaderMatcher, h headerMap) bool {
	v, ok := h.get(strings.ToLower(hm.GetName()))
	if !ok && hm.GetTreatMissingHeaderAsEmpty() {
		v, ok = "", true
	}
	switch s := hm.GetHeaderMatchSpecifier().(type) {
	case *v3routepb.HeaderMatcher_PresentMatch:
		return ok == s.PresentMatch
	case *v3routepb.HeaderMatcher_ExactMatch:
		//lint:ignore SA1019 Envoy still honours the legacy exact_match; so does the stand-in
		return ok && v == s.ExactMatch
	case *v3routepb.HeaderMatcher_PrefixMatch:
		//lint:ignore SA1019 Envoy still honours the legacy prefix_match; so does the stand-in
		return ok && strings.HasPrefix(v, s.PrefixMatch)
	case *v3routepb.HeaderMatcher_SuffixMatch:
		//lint:ignore SA1019 Envoy still honours the legacy suffix_match; so does the stand-in
		return ok && strings.HasSuffix(v, s.SuffixMatch)
	case *v3routepb.HeaderMatcher_ContainsMatch:
		//lint:ignore SA1019 Envoy still honours the legacy contains_match; so does the stand-in
		return ok && strings.Contains(v, s.ContainsMatch)
	case *v3routepb.HeaderMatcher_StringMatch:
		sm := s.StringMatch
		switch {
		case sm.GetExact() != "":
			return ok && v == sm.GetExact()
		case sm.GetPrefix() != "":
			return ok && strings.HasPrefix(v, sm.GetPrefix())
		case sm.GetSuffix() != "":
			return ok && strings.HasSuffix(v, sm.GetSuffix())
		case sm.GetContains() != "":
			return ok && strings.Contains(v, sm.GetContains())
		}
		return ok
	case nil:
		return ok
	}
	// TODO: regex and range header matchers are not emulated; such a route never matches.
	return false
}

func (r *route) pickCluster() string {
	if len(r.weighted) == 0 {
		return r.cluster
	}
	var total uint64
	for _, wc := range r.weighted {
		total += uint64(wc.weight)
	}
	if total == 0 {
		return r.weighted[0].name
	}
	n := rand.Uint64N(total)
	for _, wc := range r.weighted {
		if n < uint64(wc.weight) {
			return wc.name
		}
		n -= uint64(wc.weight)
	}
	return r.weighted[len(r.weighted)-1].name
}

// bufferLimit is the stream buffer limit: the listener's, raised (never lowered) by the
// route's request_body_buffer_limit (§3.1).
func (x *exchange) bufferLimit() uint64 {
	l := x.lc.bufferLimit
	if x.route != nil && x.route.bufferLimit > l {
		l = x.route.bufferLimit
	}
	return l
}

// forward is the router filter: it sends the request upstream with the route's timeout and
// retry policy and returns the upstream response or a local reply.
//
// TODO: the request body is read completely before the first upstream attempt (which also
// makes retries simple); Envoy streams it upstream as it arrives.
func (x *exchange) forward(ctx context.Context, body bodySource) *response {
	data, _, err := readAll(body, 0)
	if lr := (*localReply)(nil); errors.As(err, &lr) {
		return lr.response()
	} else if err != nil {
		return newLocalReply(400, "", "downstream_body_error").response()
	}
	if x.route == nil {
		return newLocalReply(404, "", "route_not_found").response()
	}
	uc := x.st.upstreams[x.cluster]
	if uc == nil {
		return newLocalReply(503, "", "cluster_not_found").response()
	}
	ctx, cancel := ctx, context.CancelFunc(func() {})
	if x.route.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, x.route.timeout)
	}
	resp := x.attempts(ctx, uc, data)
	if resp.done == nil {
		resp.done = cancel
	} else {
		prev := resp.done
		resp.done = func() { prev(); cancel() }
	}
	return resp
}

// attempts runs the first try and the retries of the route's retry policy.
func (x *exchange) attempts(ctx context.Context, uc *upstreamCluster, data []byte) *response {
	tried := map[string]bool{}
	triedPrio := map[uint32]bool{}
	rp := x.route.retry
	for try := 0; ; try++ {
		var exclude map[string]bool
		var skip map[uint32]bool
		if rp != nil && rp.previousHosts {
			exclude = tried
		}
		if rp != nil && rp.previousPriorities {
			skip = triedPrio
		}
		h := uc.pick(exclude, skip)
		if h == nil {
			return newLocalReply(503, "no healthy upstream", "no_healthy_upstream").response()
		}
		tried[h.addr], triedPrio[h.priority] = true, true
		x.upstream, x.host = h.addr, h
		resp, upstreamStatus, err := x.attempt(ctx, uc, h, data)
		status := 0
		if err == nil {
			status = resp.status()
		}
		x.px.recordServed(Served{RequestID: x.requestID, Cluster: x.cluster, Endpoint: h.addr, Status: upstreamStatus})
		if upstreamStatus >= 0 && (err == nil || ctx.Err() == nil) {
			uc.recordOutcome(h, upstreamStatus, time.Now())
		}
		if rp != nil && try < rp.numRetries && ctx.Err() == nil && rp.retriable(status, err) {
			wait := backoffDelay(try)
			if resp != nil {
				if d, ok := rp.retryAfter(resp.headers); ok {
					wait = d
				}
				resp.close()
			}
			x.px.stats.retries.Add(1)
			if !sleepCtx(ctx, wait) {
				return newLocalReply(504, "upstream request timeout", "upstream_response_timeout").response()
			}
			continue
		}
		if err != nil {
			return upstreamError(ctx, err)
		}
		return resp
	}
}

// attempt sends one upstream request to h: through the cluster's upstream filters, if any,
// then to the host, and the response back through those filters. upstreamStatus is the
// host's own status, 0 after a reset or connect failure, and -1 when an upstream filter
// answered without reaching the host.
func (x *exchange) attempt(ctx context.Context, uc *upstreamCluster, h *host, data []byte,
) (resp *response, upstreamStatus int, err error) {
	hdrs := x.upstreamHeaders()
	var ax *exchange
	if len(uc.cfg.upstreamFilters) > 0 {
		var lr *response
		ax = x.upstreamExchange(hdrs, uc)
		if data, lr = ax.decodeUpstream(ctx, data); lr != nil {
			lr.onDone(ax.closeFilters)
			return lr, -1, nil
		}
		hdrs = ax.headers
	}
	x.px.stats.upstream.Add(1)
	req, err := upstreamRequest(ctx, h, hdrs, data)
	if err == nil {
		t := x.px.h1
		if uc.cfg.http2 {
			t = x.px.h2c
		}
		var hr *http.Response
		if hr, err = t.RoundTrip(req); err == nil {
			resp, upstreamStatus = toResponse(hr, hdrs.value(":method")), hr.StatusCode
		}
	}
	if ax == nil {
		return resp, upstreamStatus, err
	}
	if err != nil {
		// A reset or connect failure never reaches the upstream filters' encode path.
		ax.closeFilters()
		return nil, 0, err
	}
	resp = ax.encode(ctx, resp, len(ax.filters))
	resp.onDone(ax.closeFilters)
	return resp, upstreamStatus, nil
}

// upstreamExchange is the state of one attempt's upstream filter chain: a copy of the
// request as the router sends it, with the cluster's filters.
func (x *exchange) upstreamExchange(hdrs headerMap, uc *upstreamCluster) *exchange {
	ax := &exchange{px: x.px, st: x.st, lc: x.lc, headers: hdrs, requestID: x.requestID,
		rc: x.rc, vh: x.vh, route: x.route, cluster: x.cluster, upstream: x.upstream,
		host: x.host, inUpstream: true}
	for _, c := range uc.cfg.upstreamFilters {
		ax.filters = append(ax.filters, newProcFilter(ax, c))
	}
	return ax
}

// decodeUpstream runs the upstream filters' decode path over the buffered request body. A
// local reply from a filter goes back through the encode path of the filters before it.
func (x *exchange) decodeUpstream(ctx context.Context, data []byte) ([]byte, *response) {
	var body bodySource
	if len(data) > 0 {
		body = &bytesSource{data: data}
	}
	for i, f := range x.filters {
		if lr := f.decodeHeaders(ctx, body == nil); lr != nil {
			return nil, x.encode(ctx, lr.response(), i+1)
		}
		var lr *localReply
		if body, lr = f.decodeBody(ctx, body); lr != nil {
			return nil, x.encode(ctx, lr.response(), i+1)
		}
	}
	out, _, err := readAll(body, 0)
	if err != nil {
		return nil, newLocalReply(500, "", "upstream_filter_body_error").response()
	}
	return out, nil
}

// upstreamHeaders is the request as the router sends it upstream: the route's path and
// host rewrites and header additions applied to the filters' headers.
func (x *exchange) upstreamHeaders() headerMap {
	hdrs := x.headers.clone()
	path := hdrs.value(":path")
	if r := x.route; r.prefixRewrite != "" && !r.hasPath && strings.HasPrefix(path, r.prefix) {
		path = r.prefixRewrite + path[len(r.prefix):]
	} else if r.regexRewrite != nil {
		// regex_rewrite applies to the path without the query string.
		p, q, hasQ := strings.Cut(path, "?")
		path = r.regexRewrite.ReplaceAllString(p, expandEnvoySubst(r.regexSubst))
		if hasQ {
			path += "?" + q
		}
	}
	hdrs.set(":path", path)
	for _, k := range x.route.removeHeaders {
		hdrs.del(strings.ToLower(k))
	}
	for _, o := range x.route.addHeaders {
		if o.appnd {
			hdrs.add(o.key, o.value)
		} else {
			hdrs.set(o.key, o.value)
		}
	}
	if x.route.hostRewrite != "" {
		hdrs.set(":authority", x.route.hostRewrite)
	}
	return hdrs
}

func upstreamRequest(ctx context.Context, h *host, hdrs headerMap, data []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, hdrs.value(":method"), "http://"+h.addr+hdrs.value(":path"),
		bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header = hdrs.toHTTPHeader()
	req.Header.Set("X-Forwarded-Proto", hdrs.value(":scheme"))
	req.Host = hdrs.value(":authority")
	req.ContentLength = int64(len(data))
	if _, ok := hdrs.get("content-length"); !ok && len(data) > 0 {
		req.ContentLength = -1 // the client sent no length; keep it chunked
	}
	if len(data) == 0 {
		req.Body = http.NoBody
	}
	return req, nil
}

// toResponse converts an upstream answer into a response on the encode path.
func toResponse(resp *http.Response, method string) *response {
	h := headerMap{{":status", strconv.Itoa(resp.StatusCode)}}
	appendHTTPHeader(&h, resp.Header)
	out := &response{headers: h, done: func() { resp.Body.Close() }}
	noBody := resp.ContentLength == 0 || resp.StatusCode == http.StatusNoContent ||
		resp.StatusCode == http.StatusNotModified || method == http.MethodHead
	if !noBody {
		out.body = &readerSource{r: resp.Body, remaining: resp.ContentLength}
	}
	return out
}

// upstreamError is the local reply after the last attempt failed without a response.
func upstreamError(ctx context.Context, err error) *response {
	if ctx.Err() != nil {
		return newLocalReply(504, "upstream request timeout", "upstream_response_timeout").response()
	}
	return newLocalReply(503, "upstream connect error or disconnect/reset before headers. "+
		"reset reason: "+resetReason(err), "upstream_reset_before_response_started").response()
}

// expandEnvoySubst turns Envoy's \1 capture references into Go's "${1}".
func expandEnvoySubst(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
			b.WriteString("${" + string(s[i+1]) + "}")
			i++
			continue
		}
		if s[i] == '$' {
			b.WriteString("$$")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func resetReason(err error) string {
	if isConnectFailure(err) {
		return "connection failure"
	}
	return "connection termination"
}

func isConnectFailure(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// retriable applies retry_on to an attempt's status (after the upstream filters) or error:
// 5xx (also resets and connect failures), gateway-error, reset, connect-failure and
// retriable-status-codes.
func (rp *retryPolicy) retriable(s int, err error) bool {
	if err != nil {
		return rp.on["5xx"] || rp.on["gateway-error"] || rp.on["reset"] ||
			rp.on["connect-failure"] && isConnectFailure(err)
	}
	return rp.on["5xx"] && s >= 500 ||
		rp.on["gateway-error"] && (s == 502 || s == 503 || s == 504) ||
		rp.on["retriable-status-codes"] && rp.statusCodes[s]
}

// backoffDelay is Envoy's default fully jittered back-off (25 ms base, doubling). A
// rate-limited answer's Retry-After replaces it when the policy names that header
// (rate_limited_retry_back_off).
//
// TODO: retry_back_off settings are not honoured; the default base and cap always apply.
func backoffDelay(try int) time.Duration {
	limit := 25 * time.Millisecond << min(try, 3)
	return time.Duration(rand.Int64N(int64(limit)))
}

// sleepCtx waits d; it reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
