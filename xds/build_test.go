package xds

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/phochat/phogate/internal/config"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func loadExampleConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load(filepath.Join("..", "envoy", "phogate.yaml"))
	if err != nil {
		t.Fatalf("loading example config: %v", err)
	}
	return cfg
}

func buildExample(t *testing.T, opts BuildOptions) *Resources {
	t.Helper()
	r, err := Build(loadExampleConfig(t), opts)
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	return r
}

// resourcesJSON renders r as indented JSON with stable whitespace (protojson randomises it).
func resourcesJSON(t *testing.T, r *Resources) []byte {
	t.Helper()
	var out bytes.Buffer
	out.WriteString("[\n")
	for i, nr := range r.all() {
		b, err := protojson.Marshal(nr.msg)
		if err != nil {
			t.Fatalf("marshalling %s %q: %v", nr.kind, nr.name, err)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, b); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			out.WriteString(",\n")
		}
		if err := json.Indent(&out, c.Bytes(), "", "  "); err != nil {
			t.Fatal(err)
		}
	}
	out.WriteString("\n]\n")
	return out.Bytes()
}

func TestBuildGolden(t *testing.T) {
	r := buildExample(t, BuildOptions{GRPCListenerName: "phogate-grpc"})
	got := resourcesJSON(t, r)
	path := filepath.Join("testdata", "phogate.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("Build() output differs from %s; run go test ./xds -run TestBuildGolden -update "+
			"and review the diff", path)
	}
}

func TestBuildValidates(t *testing.T) {
	tests := []struct {
		name string
		opts BuildOptions
	}{
		{"defaults", BuildOptions{}},
		{"all options", BuildOptions{
			GRPCListenerName: "phogate-grpc",
			AccessLog:        true,
			LBPolicy:         LeastRequest,
			EndpointWeights:  map[string]map[string]uint32{"fake-openai": {"127.0.0.1:18081": 0}},
			ClusterWeights: map[string]map[string]uint32{
				"gpt-4o-mini": {"fake-openai": 0, "fake-azure": 3},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := buildExample(t, tt.opts)
			for _, nr := range r.all() {
				if err := ValidateResource(nr.msg); err != nil {
					t.Errorf("ValidateResource(%s %q) = %v", nr.kind, nr.name, err)
				}
			}
			if err := ValidateSemantics(r); err != nil {
				t.Errorf("ValidateSemantics() = %v", err)
			}
		})
	}
}

func TestBuildTLSProvider(t *testing.T) {
	cfg, err := config.Parse([]byte(`
providers:
  - name: openai
    base_url: https://api.openai.com/v1
    models: [m]
models:
  - name: m
`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Build(cfg, BuildOptions{})
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	if err := Validate(r); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	c := r.Clusters[1]
	if got, want := c.GetType(), v3clusterpb.Cluster_STRICT_DNS; got != want {
		t.Errorf("cluster type = %v, want %v (host names cannot go through EDS)", got, want)
	}
	if c.GetTransportSocket() == nil {
		t.Errorf("https provider cluster has no transport socket")
	}
	if len(r.Endpoints) != 0 {
		t.Errorf("Endpoints = %d, want 0 for a DNS cluster", len(r.Endpoints))
	}
}

// A model cluster mixing an https provider reached by name and a plain-HTTP one is a DNS
// cluster whose TLS comes from a transport socket match on the TLS provider's endpoints.
func TestBuildMixedModelCluster(t *testing.T) {
	cfg, err := config.Parse([]byte(`
providers:
  - name: openai
    base_url: https://api.openai.com/v1
    models: [m]
  - name: local
    base_url: http://10.0.0.1:8000/v1
    models: [{name: m, upstream_name: m-local}]
models:
  - name: m
`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Build(cfg, BuildOptions{})
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	if err := Validate(r); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	var c *v3clusterpb.Cluster
	for _, cl := range r.Clusters {
		if cl.GetName() == ModelClusterName("m", "local") {
			c = cl
		}
	}
	if c == nil {
		t.Fatalf("no cluster %s", ModelClusterName("m", "local"))
	}
	if c.GetType() != v3clusterpb.Cluster_STRICT_DNS || c.GetTransportSocket() != nil {
		t.Errorf("type %v with transport socket %v, want STRICT_DNS with TLS only by match",
			c.GetType(), c.GetTransportSocket())
	}
	tsm := c.GetTransportSocketMatches()
	if len(tsm) != 1 || tsm[0].GetMatch().GetFields()["provider"].GetStringValue() != "openai" {
		t.Fatalf("transport_socket_matches = %v, want one for openai", tsm)
	}
	locs := c.GetLoadAssignment().GetEndpoints()
	if len(locs) != 2 || locs[0].GetPriority() != 0 || locs[1].GetPriority() != 1 {
		t.Fatalf("localities = %v, want local at priority 0 and openai at 1", locs)
	}
	tlsEndpoint := locs[1].GetLbEndpoints()[0].GetMetadata().GetFilterMetadata()
	if tlsEndpoint[transportSocketMatchKey].GetFields()["provider"].GetStringValue() != "openai" ||
		tlsEndpoint["phogate"].GetFields()["provider"].GetStringValue() != "openai" {
		t.Errorf("openai endpoint metadata = %v, want the provider in both namespaces", tlsEndpoint)
	}
	if md := locs[0].GetLbEndpoints()[0].GetMetadata().GetFilterMetadata(); md[transportSocketMatchKey] != nil {
		t.Errorf("plain-HTTP endpoint metadata %v matches a TLS transport socket", md)
	}
}

func TestBuildRejectsZeroClusterWeights(t *testing.T) {
	_, err := Build(loadExampleConfig(t), BuildOptions{ClusterWeights: map[string]map[string]uint32{
		"gpt-4o": {"fake-openai": 0},
	}})
	if err == nil || !strings.Contains(err.Error(), "weight sum") {
		t.Errorf("Build() with all weights 0 = %v, want a weight sum error", err)
	}
}

// mutateExtProc applies f to the ext_proc filter config inside the HTTP listener.
func mutateExtProc(t *testing.T, r *Resources, f func(*v3extprocpb.ExternalProcessor)) {
	t.Helper()
	mutateHCM(t, r, func(hcm *v3hcmpb.HttpConnectionManager) {
		ep := &v3extprocpb.ExternalProcessor{}
		if err := hcm.HttpFilters[0].GetTypedConfig().UnmarshalTo(ep); err != nil {
			t.Fatal(err)
		}
		f(ep)
		hcm.HttpFilters[0].ConfigType = &v3hcmpb.HttpFilter_TypedConfig{TypedConfig: mustAny(ep)}
	})
}

func mutateHCM(t *testing.T, r *Resources, f func(*v3hcmpb.HttpConnectionManager)) {
	t.Helper()
	filter := r.Listeners[0].FilterChains[0].Filters[0]
	hcm := &v3hcmpb.HttpConnectionManager{}
	if err := filter.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	f(hcm)
	filter.ConfigType = &v3listenerpb.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
}

func TestValidateResourceLooksInsideAny(t *testing.T) {
	r := buildExample(t, BuildOptions{})
	mutateExtProc(t, r, func(ep *v3extprocpb.ExternalProcessor) {
		ep.MessageTimeout = durationpb.New(4000 * time.Second)
	})
	if err := r.Listeners[0].ValidateAll(); err != nil {
		t.Fatalf("generated ValidateAll() = %v; the test expects it to miss the error", err)
	}
	err := ValidateResource(r.Listeners[0])
	if err == nil || !strings.Contains(err.Error(), "MessageTimeout") {
		t.Errorf("ValidateResource() = %v, want an ExternalProcessor.MessageTimeout error", err)
	}
}

func TestValidateSemantics(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*testing.T, *Resources)
		want   string
	}{
		{"router not last", func(t *testing.T, r *Resources) {
			mutateHCM(t, r, func(h *v3hcmpb.HttpConnectionManager) {
				h.HttpFilters[0], h.HttpFilters[1] = h.HttpFilters[1], h.HttpFilters[0]
			})
		}, "want the router"},
		{"no service", func(t *testing.T, r *Resources) {
			mutateExtProc(t, r, func(ep *v3extprocpb.ExternalProcessor) { ep.GrpcService = nil })
		}, "exactly one of grpc_service and http_service"},
		{"full duplex without trailers", func(t *testing.T, r *Resources) {
			mutateExtProc(t, r, func(ep *v3extprocpb.ExternalProcessor) {
				ep.ProcessingMode.RequestBodyMode = v3extprocpb.ProcessingMode_FULL_DUPLEX_STREAMED
			})
		}, "requires request_trailer_mode SEND"},
		{"bad attribute", func(t *testing.T, r *Resources) {
			mutateExtProc(t, r, func(ep *v3extprocpb.ExternalProcessor) {
				ep.RequestAttributes = []string{"request.id)"}
			})
		}, "not a valid attribute"},
		{"ext_proc cluster missing", func(t *testing.T, r *Resources) {
			r.Clusters = r.Clusters[1:]
		}, `envoy_grpc cluster "phogate_ext_proc" does not exist`},
		{"ext_proc cluster not HTTP/2", func(t *testing.T, r *Resources) {
			r.Clusters[0].TypedExtensionProtocolOptions = nil
		}, "must speak HTTP/2"},
		{"weights sum to zero", func(t *testing.T, r *Resources) {
			for _, rt := range r.Routes[0].VirtualHosts[0].Routes {
				for _, cw := range rt.GetRoute().GetWeightedClusters().GetClusters() {
					cw.Weight = u32(0)
				}
			}
		}, "weighted cluster sum 0"},
		{"routed cluster missing", func(t *testing.T, r *Resources) {
			rt := r.Routes[0].VirtualHosts[0].Routes[0]
			rt.GetRoute().ClusterSpecifier = &v3routepb.RouteAction_Cluster{Cluster: "nope"}
		}, `cluster "nope" does not exist`},
		{"endpoints missing", func(t *testing.T, r *Resources) {
			r.Endpoints = r.Endpoints[1:]
		}, "has no endpoints"},
		{"route configuration not referenced", func(t *testing.T, r *Resources) {
			r.Routes[0].Name = "other"
		}, `"phogate_routes" is referenced but not defined`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := buildExample(t, BuildOptions{})
			tt.mutate(t, r)
			err := ValidateSemantics(r)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ValidateSemantics() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateResourceUnknownAny(t *testing.T) {
	l := &v3listenerpb.Listener{Name: "x", FilterChains: []*v3listenerpb.FilterChain{{
		Filters: []*v3listenerpb.Filter{{Name: "f", ConfigType: &v3listenerpb.Filter_TypedConfig{
			TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/unknown.Type"},
		}}},
	}}}
	if err := ValidateResource(l); err == nil {
		t.Errorf("ValidateResource() with an unknown Any = nil, want an error")
	}
	if err := ValidateResource(nil); err == nil {
		t.Errorf("ValidateResource(nil) = nil, want an error")
	}
}
