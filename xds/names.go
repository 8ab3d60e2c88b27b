package xds

import "github.com/phochat/phogate/internal/routeheaders"

// Names of the resources that [Build] generates. Envoy references resources by name, so these
// are part of the contract with the Envoy bootstrap and with anything that reads Envoy stats.
const (
	// ListenerName is the client-facing HTTP listener.
	ListenerName = "phogate_http"
	// RouteConfigName is the RouteConfiguration that every listener loads over RDS.
	RouteConfigName = "phogate_routes"
	// VirtualHostName is the single virtual host of [RouteConfigName].
	VirtualHostName = "phogate"
	// ExtProcClusterName is the cluster through which Envoy reaches the ext_proc server.
	ExtProcClusterName = "phogate_ext_proc"
	// ProviderClusterPrefix starts the name of every provider cluster; see
	// [ProviderClusterName].
	ProviderClusterPrefix = "provider_"
	// ModelClusterPrefix starts the name of every model cluster; see [ModelClusterName].
	ModelClusterPrefix = "model_"
	// StatPrefix prefixes the HTTP connection manager and ext_proc stats.
	StatPrefix = "phogate"
)

// HeaderModel is the header that steers routing; see [routeheaders.Model].
const HeaderModel = routeheaders.Model

// ProviderClusterName returns the name of the cluster serving the provider named provider.
func ProviderClusterName(provider string) string { return ProviderClusterPrefix + provider }
