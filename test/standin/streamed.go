package standin

import (
	"context"

	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// pendingChunk is a body chunk sent to ext_proc (or passed through) awaiting release.
type pendingChunk struct {
	data []byte
	eos  bool
	sent bool
	err  error
}

// streamedBody implements STREAMED mode (§1.4): a pump sends chunks as they arrive, without
// waiting for replies, and next releases them in order, each replaced by its own
// BodyResponse. After a fail-open the remaining chunks pass through unchanged.
type streamedBody struct {
	ctx      context.Context
	f        *procFilter
	response bool
	pending  chan pendingChunk
}

func newStreamedBody(ctx context.Context, f *procFilter, inner bodySource, response bool) *streamedBody {
	s := &streamedBody{ctx: ctx, f: f, response: response, pending: make(chan pendingChunk, 1024)}
	go s.pump(inner)
	return s
}

func (s *streamedBody) pump(inner bodySource) {
	for {
		data, eos, err := inner.next()
		pc := pendingChunk{data: data, eos: eos, err: err}
		if err == nil && !s.f.complete.Load() {
			// A failed send shows up as the stream status on the reply side.
			pc.sent = s.f.send(s.ctx, s.chunkRequest(data, eos), s.response) == nil ||
				!s.f.complete.Load()
		}
		select {
		case s.pending <- pc:
		case <-s.ctx.Done():
			return
		}
		if eos || err != nil {
			return
		}
	}
}

func (s *streamedBody) chunkRequest(data []byte, eos bool) *v3procservicepb.ProcessingRequest {
	b := &v3procservicepb.HttpBody{Body: data, EndOfStream: eos}
	if s.response {
		return &v3procservicepb.ProcessingRequest{
			Request: &v3procservicepb.ProcessingRequest_ResponseBody{ResponseBody: b}}
	}
	return &v3procservicepb.ProcessingRequest{
		Request: &v3procservicepb.ProcessingRequest_RequestBody{RequestBody: b}}
}

func (s *streamedBody) next() ([]byte, bool, error) {
	var pc pendingChunk
	select {
	case pc = <-s.pending:
	case <-s.ctx.Done():
		return nil, false, s.ctx.Err()
	}
	if pc.err != nil {
		return nil, false, pc.err
	}
	if !pc.sent || s.f.complete.Load() {
		return pc.data, pc.eos, nil
	}
	want := kindRequestBody
	if s.response {
		want = kindResponseBody
	}
	resp, lr := s.f.await(s.ctx, want)
	switch {
	case lr != nil:
		// Response headers already went downstream: the stream is reset (§1.6).
		lr.reset = lr.reset || s.response
		return nil, false, lr
	case resp == nil:
		return pc.data, pc.eos, nil
	case resp.GetImmediateResponse() != nil:
		lr := s.f.immediate(resp.GetImmediateResponse())
		lr.reset = s.response
		return nil, false, lr
	}
	cr := bodyCommon(resp)
	// header_mutation in a STREAMED body reply is ignored; the headers already moved on (§1.7).
	if !s.response {
		s.f.maybeClearRouteCache(cr)
	}
	if bm := cr.GetBodyMutation(); bm != nil {
		return mutatedChunk(bm, pc.data), pc.eos, nil
	}
	return pc.data, pc.eos, nil
}
