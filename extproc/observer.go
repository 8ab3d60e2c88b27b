package extproc

import "github.com/phochat/phogate/routing"

// Observer receives one [routing.Observation] per answered request, at the end of its
// stream. Observe is called on the stream's goroutine, so it must not block; it must be
// safe for concurrent use.
type Observer interface {
	Observe(o routing.Observation)
}

// observe reports the finished request to the observer. Only answers from a provider count:
// a request answered by the gateway itself, or cut off before any answer, says nothing
// about the provider. Failed and rate-limited answers were already reported by the upstream
// filter, once per attempt (upstream.go), so only the others are reported here.
func (st *stream) observe() {
	if st.s.observer == nil || st.provider == nil || st.model == nil || st.routedAt.IsZero() ||
		st.headersAt.IsZero() || st.status >= 500 || st.status == 429 {
		return
	}
	end := st.s.now()
	first := st.headersAt
	streamed := st.mode == respSSE
	if streamed && !st.firstChunkAt.IsZero() {
		first = st.firstChunkAt
	}
	o := routing.Observation{
		Model:    st.model.Name,
		Provider: st.provider.Name,
		Cluster:  st.cluster,
		Endpoint: st.upstreamAddr,
		Status:   st.status,
		TTFB:     max(first.Sub(st.routedAt), 0),
		Total:    max(end.Sub(st.routedAt), 0),
		Streamed: streamed,
		At:       end,
	}
	if st.hasUsage {
		o.OutputTokens = int(st.usage.CompletionTokens)
	}
	st.s.observer.Observe(o)
}
