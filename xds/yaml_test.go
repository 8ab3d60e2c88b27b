package xds

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v3bootstrappb "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

func TestBootstrapYAML(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "envoy", "bootstrap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bs := &v3bootstrappb.Bootstrap{}
	if err := ParseEnvoyYAML(b, bs); err != nil {
		t.Fatalf("ParseEnvoyYAML(bootstrap.yaml) = %v", err)
	}
	if err := ValidateResource(bs); err != nil {
		t.Fatalf("ValidateResource(bootstrap) = %v", err)
	}
	ads := bs.GetDynamicResources().GetAdsConfig()
	if got := ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName(); got != "phogate_xds" {
		t.Errorf("ADS cluster = %q, want phogate_xds", got)
	}
	if bs.GetDynamicResources().GetCdsConfig().GetAds() == nil ||
		bs.GetDynamicResources().GetLdsConfig().GetAds() == nil {
		t.Errorf("CDS and LDS must come over ADS")
	}
}

func TestParseEnvoyYAML(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    func(*v3routepb.RouteConfiguration) string // returns a problem or ""
		wantErr string
	}{
		{
			name: "yes stays a string",
			yaml: "name: yes\n",
			want: func(rc *v3routepb.RouteConfiguration) string {
				if rc.GetName() != "yes" {
					return "name = " + rc.GetName()
				}
				return ""
			},
		},
		{name: "leading zero refused, not octal", yaml: "max_direct_response_body_size_bytes: 010\n",
			wantErr: "invalid value"},
		{name: "unknown field", yaml: "nmae: r\n", wantErr: "unknown field"},
		{name: "hex refused", yaml: "max_direct_response_body_size_bytes: 0x1F\n", wantErr: "invalid"},
		{name: "empty", yaml: "", wantErr: "empty"},
		{name: "broken yaml", yaml: "name: [\n", wantErr: "parsing envoy yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &v3routepb.RouteConfiguration{}
			err := ParseEnvoyYAML([]byte(tt.yaml), rc)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParseEnvoyYAML(%q) = %v, want error containing %q", tt.yaml, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEnvoyYAML(%q) = %v", tt.yaml, err)
			}
			if p := tt.want(rc); p != "" {
				t.Errorf("ParseEnvoyYAML(%q): %s", tt.yaml, p)
			}
		})
	}
}
