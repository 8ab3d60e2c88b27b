package extproc

import (
	"log/slog"
	"strconv"
	"sync"
	"testing"

	v3procfilterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phochat/phogate/internal/routeheaders"
	"github.com/phochat/phogate/routing"
)

// attemptHeaders is the request headers message of the upstream filter: the listener
// filter's result (model header, no client credential) and the provider of the endpoint
// Envoy picked, as an attribute.
func attemptHeaders(provider, model string, bodyLen int) *v3procservicepb.ProcessingRequest {
	req := requestHeaders(bodyLen == 0, ":method", "POST", ":path", "/v1/chat/completions",
		":authority", "gw", "x-request-id", "req-9", "content-type", "application/json",
		"content-length", strconv.Itoa(bodyLen), routeheaders.Model, model)
	req.Attributes = map[string]*structpb.Struct{attributesKey: {Fields: map[string]*structpb.Value{
		routeheaders.ProviderAttribute: structpb.NewStringValue(provider),
	}}}
	return req
}

// recordingObserver keeps every observation.
type recordingObserver struct {
	mu  sync.Mutex
	obs []routing.Observation
}

func (r *recordingObserver) Observe(o routing.Observation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, o)
}

func (r *recordingObserver) all() []routing.Observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]routing.Observation(nil), r.obs...)
}

func TestUpstreamAttempt(t *testing.T) {
	noBody := &v3procfilterpb.ProcessingMode{
		ResponseHeaderMode: v3procfilterpb.ProcessingMode_SEND,
		RequestBodyMode:    v3procfilterpb.ProcessingMode_NONE,
		ResponseBodyMode:   v3procfilterpb.ProcessingMode_NONE,
	}
	tests := []struct {
		name, provider, model, body string
		wantSet                     map[string]string
		wantRemove                  []string
		wantBody                    string // empty: the body is not asked for
	}{
		{
			name: "bearer key, same model name", provider: "openai", model: "gpt-4o-mini",
			body: chatBody,
			wantSet: map[string]string{":authority": "127.0.0.1:1", ":path": "/v1/chat/completions",
				"authorization": "Bearer " + testOpenAIKey},
		},
		{
			name: "own auth header, base path and model name", provider: "azure", model: "gpt-4o",
			body: `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
			wantSet: map[string]string{":authority": "127.0.0.1:2",
				":path": "/openai/v1/chat/completions", "api-key": testAzureKey},
			wantRemove: []string{"authorization"},
			wantBody:   `{"model":"gpt-4o-2024-08-06","messages":[{"role":"user","content":"hi"}]}`,
		},
		{
			name: "no key removes any credential", provider: "local", model: "llama",
			body:       `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`,
			wantSet:    map[string]string{":authority": "127.0.0.1:3", ":path": "/v1/chat/completions"},
			wantRemove: []string{"authorization"},
			wantBody:   `{"model":"llama-3.1-8b","messages":[{"role":"user","content":"hi"}]}`,
		},
	}
	env := newTestEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := env.openUpstream(t)
			resp := es.roundTrip(attemptHeaders(tt.provider, tt.model, len(tt.body)))
			cr := resp.GetRequestHeaders().GetResponse()
			if cr == nil {
				t.Fatalf("headers reply = %v, want a HeadersResponse", resp)
			}
			checkMutation(t, cr, tt.wantSet, tt.wantRemove, "")
			if cr.GetClearRouteCache() {
				t.Error("clear_route_cache set; an upstream filter ignores it")
			}
			if tt.wantBody == "" {
				if diff := cmp.Diff(noBody, resp.GetModeOverride(), protocmp.Transform()); diff != "" {
					t.Errorf("mode_override (-want +got):\n%s", diff)
				}
				return
			}
			if resp.GetModeOverride() != nil {
				t.Fatalf("mode_override = %v, want the body", resp.GetModeOverride())
			}
			resp = es.roundTrip(requestBody(tt.body))
			cr = resp.GetRequestBody().GetResponse()
			checkMutation(t, cr, map[string]string{"content-length": strconv.Itoa(len(tt.wantBody))}, nil,
				tt.wantBody)
		})
	}
}

func TestUpstreamAttemptUnknownProvider(t *testing.T) {
	env := newTestEnvLevel(t, slog.LevelWarn)
	tests := []struct{ name, provider, model string }{
		{"provider not configured", "nobody", "gpt-4o-mini"},
		{"model not configured", "openai", "nope"},
		{"provider does not serve the model", "local", "gpt-4o-mini"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es := env.openUpstream(t)
			resp := es.roundTrip(attemptHeaders(tt.provider, tt.model, 10))
			if got := resp.GetImmediateResponse().GetStatus().GetCode(); got != 502 {
				t.Fatalf("reply = %v, want an immediate 502", resp)
			}
		})
	}
}

func TestUpstreamAttemptReportsFailures(t *testing.T) {
	obs := &recordingObserver{}
	env := newTestEnvOpts(t, slog.LevelWarn, Options{Observer: obs})
	for _, status := range []string{"503", "429", "200"} {
		es := env.openUpstream(t)
		es.roundTrip(attemptHeaders("openai", "gpt-4o-mini", 0))
		resp := es.roundTrip(responseHeaders(status, "application/json"))
		set := headers(t, resp.GetResponseHeaders().GetResponse().GetHeaderMutation())
		if set[routeheaders.Provider] != "openai" {
			t.Errorf("status %s: response headers set %v, want %s: openai", status, set,
				routeheaders.Provider)
		}
	}
	got := obs.all()
	if len(got) != 2 || got[0].Status != 503 || got[1].Status != 429 {
		t.Fatalf("observations = %+v, want the 503 and the 429 only", got)
	}
	if got[0].Provider != "openai" || got[0].Model != "gpt-4o-mini" || got[0].Endpoint != "127.0.0.1:18081" {
		t.Errorf("observation = %+v, want provider openai, model gpt-4o-mini, endpoint 127.0.0.1:18081",
			got[0])
	}
	if n := testutil.ToFloat64(env.srv.metrics.attempts.WithLabelValues("openai", "503")); n != 1 {
		t.Errorf("attempts{openai,503} = %v, want 1", n)
	}
}
