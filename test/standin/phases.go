package standin

import (
	"context"
	"strconv"

	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

const (
	modeNone     = v3extprocpb.ProcessingMode_NONE
	modeBuffered = v3extprocpb.ProcessingMode_BUFFERED
	modeStreamed = v3extprocpb.ProcessingMode_STREAMED
	modeSkip     = v3extprocpb.ProcessingMode_SKIP
)

// decodeHeaders sends request_headers and applies the reply (§1.4, §1.7).
func (f *procFilter) decodeHeaders(ctx context.Context, eos bool) *localReply {
	if f.complete.Load() || f.mode.GetRequestHeaderMode() == modeSkip {
		return nil
	}
	req := &v3procservicepb.ProcessingRequest{Request: &v3procservicepb.ProcessingRequest_RequestHeaders{
		RequestHeaders: &v3procservicepb.HttpHeaders{Headers: toProtoHeaders(f.x.headers), EndOfStream: eos},
	}}
	resp, lr := f.exchange(ctx, req, kindRequestHeaders, false)
	if resp == nil {
		return lr
	}
	if ir := resp.GetImmediateResponse(); ir != nil {
		return f.immediate(ir)
	}
	f.applyModeOverride(resp)
	cr := resp.GetRequestHeaders().GetResponse()
	replace := cr.GetStatus() == v3procservicepb.CommonResponse_CONTINUE_AND_REPLACE
	o := mutateOptions{replace: replace, stripContentLength: f.stripsContentLength(false)}
	if lr := f.applyCommon(cr, &f.x.headers, false, o); lr != nil {
		return lr
	}
	if replace {
		f.replaceBody(cr, &f.x.headers, false)
	}
	return nil
}

// replaceBody handles CONTINUE_AND_REPLACE: the body (if given) replaces the original and
// nothing more is sent for this direction (§1.7).
func (f *procFilter) replaceBody(cr *v3procservicepb.CommonResponse, h *headerMap, response bool) {
	if bm := cr.GetBodyMutation(); bm != nil {
		h.del("content-length")
		f.replaced = bm.GetBody()
		if f.replaced == nil {
			f.replaced = []byte{}
		}
	}
	if response {
		f.mode.ResponseBodyMode = modeNone
	} else {
		f.mode.RequestBodyMode = modeNone
	}
}

// stripsContentLength reports whether content-length is removed in a direction: STREAMED,
// or BUFFERED with headers SKIP, unless allow_content_length_header (§1.4, §2.2).
func (f *procFilter) stripsContentLength(response bool) bool {
	body, hdr := f.mode.GetRequestBodyMode(), f.mode.GetRequestHeaderMode()
	if response {
		body, hdr = f.mode.GetResponseBodyMode(), f.mode.GetResponseHeaderMode()
	}
	if f.cfg.allowContentLength {
		return false
	}
	return body == modeStreamed || body == modeBuffered && hdr == modeSkip
}

// decodeBody processes the request body per the request body mode.
func (f *procFilter) decodeBody(ctx context.Context, body bodySource) (bodySource, *localReply) {
	if f.replaced != nil {
		out := &bytesSource{data: f.replaced}
		f.replaced = nil
		return out, nil
	}
	if body == nil || f.complete.Load() {
		return body, nil
	}
	if f.stripsContentLength(false) {
		f.x.headers.del("content-length")
	}
	switch f.mode.GetRequestBodyMode() {
	case modeBuffered:
		return f.bufferedBody(ctx, body, &f.x.headers, false)
	case modeStreamed:
		return newStreamedBody(ctx, f, body, false), nil
	}
	return body, nil
}

// bufferedBody sends the whole body as one message while the headers are held, so the reply
// may still mutate them (§1.4). Over the buffer limit: request 413, response 500, and nothing
// goes to ext_proc (§3.1).
func (f *procFilter) bufferedBody(ctx context.Context, body bodySource, h *headerMap,
	response bool) (bodySource, *localReply) {
	data, over, err := readAll(body, f.x.bufferLimit())
	switch {
	case err != nil:
		return nil, &localReply{status: 400, reset: response, details: "body_read_error"}
	case over && response:
		return nil, newLocalReply(500, "Internal Server Error", "response_payload_too_large")
	case over:
		return nil, newLocalReply(413, "Payload Too Large", "request_payload_too_large")
	}
	want, req := kindRequestBody, &v3procservicepb.ProcessingRequest{
		Request: &v3procservicepb.ProcessingRequest_RequestBody{
			RequestBody: &v3procservicepb.HttpBody{Body: data, EndOfStream: true}}}
	if response {
		want, req = kindResponseBody, &v3procservicepb.ProcessingRequest{
			Request: &v3procservicepb.ProcessingRequest_ResponseBody{
				ResponseBody: &v3procservicepb.HttpBody{Body: data, EndOfStream: true}}}
	}
	resp, lr := f.exchange(ctx, req, want, response)
	if resp == nil {
		return &bytesSource{data: data}, lr
	}
	if ir := resp.GetImmediateResponse(); ir != nil {
		return nil, f.immediate(ir)
	}
	cr := bodyCommon(resp)
	o := mutateOptions{stripContentLength: f.stripsContentLength(response)}
	if lr := f.applyCommon(cr, h, response, o); lr != nil {
		return nil, lr
	}
	return f.mutateBuffered(cr, data, h)
}

func bodyCommon(resp *v3procservicepb.ProcessingResponse) *v3procservicepb.CommonResponse {
	if b := resp.GetRequestBody(); b != nil {
		return b.GetResponse()
	}
	return resp.GetResponseBody().GetResponse()
}

// mutateBuffered applies body_mutation to a buffered body. A held content-length that
// differs from the new length is a local reply with status_on_error (§1.7).
func (f *procFilter) mutateBuffered(cr *v3procservicepb.CommonResponse, data []byte,
	h *headerMap) (bodySource, *localReply) {
	bm := cr.GetBodyMutation()
	if bm == nil {
		return &bytesSource{data: data}, nil
	}
	data = mutatedChunk(bm, data)
	if cl, ok := h.get("content-length"); ok && cl != strconv.Itoa(len(data)) {
		f.close()
		return nil, &localReply{status: f.cfg.statusOnError,
			details: "mismatch_between_content_length_and_the_length_of_the_mutated_body"}
	}
	return &bytesSource{data: data}, nil
}

func mutatedChunk(bm *v3procservicepb.BodyMutation, data []byte) []byte {
	switch m := bm.GetMutation().(type) {
	case *v3procservicepb.BodyMutation_Body:
		return m.Body
	case *v3procservicepb.BodyMutation_ClearBody:
		if m.ClearBody {
			return nil
		}
	}
	return data
}

// encode runs the response through this filter. direct reports a local reply that goes
// straight downstream, skipping the remaining encoders (§1.6).
func (f *procFilter) encode(ctx context.Context, resp *response) (*response, bool) {
	if f.complete.Load() {
		return resp, false
	}
	f.x.respStatus = resp.status()
	if f.mode.GetResponseHeaderMode() != modeSkip {
		next, direct := f.encodeHeaders(ctx, resp)
		if direct || next == nil {
			return next, direct
		}
	}
	if f.replaced != nil {
		resp.body, f.replaced = &bytesSource{data: f.replaced}, nil
		return resp, false
	}
	if resp.body == nil || f.complete.Load() {
		return resp, false
	}
	if f.stripsContentLength(true) {
		resp.headers.del("content-length")
	}
	switch f.mode.GetResponseBodyMode() {
	case modeBuffered:
		body, lr := f.bufferedBody(ctx, resp.body, &resp.headers, true)
		if lr != nil {
			return lr.response(), true
		}
		resp.body = body
	case modeStreamed:
		resp.body = newStreamedBody(ctx, f, resp.body, true)
	}
	return resp, false
}

// encodeHeaders sends response_headers and applies the reply.
func (f *procFilter) encodeHeaders(ctx context.Context, resp *response) (*response, bool) {
	req := &v3procservicepb.ProcessingRequest{Request: &v3procservicepb.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &v3procservicepb.HttpHeaders{
			Headers:     toProtoHeaders(resp.headers),
			EndOfStream: resp.body == nil,
		},
	}}
	r, lr := f.exchange(ctx, req, kindResponseHeaders, true)
	switch {
	case lr != nil:
		return lr.response(), true
	case r == nil:
		return resp, false
	case r.GetImmediateResponse() != nil:
		return f.immediate(r.GetImmediateResponse()).response(), true
	}
	f.applyModeOverride(r)
	cr := r.GetResponseHeaders().GetResponse()
	replace := cr.GetStatus() == v3procservicepb.CommonResponse_CONTINUE_AND_REPLACE
	o := mutateOptions{replace: replace, stripContentLength: f.stripsContentLength(true)}
	if lr := f.applyCommon(cr, &resp.headers, true, o); lr != nil {
		return lr.response(), true
	}
	if replace {
		f.replaceBody(cr, &resp.headers, true)
	}
	return resp, false
}
