// Package routeheaders names what the ext_proc server and the xDS control plane must agree
// on: the request header that steers Envoy's routing, the endpoint metadata that names a
// provider, and how the ext_proc server tells its two filters apart. Keeping them here lets
// both sides agree without the ext_proc server importing the control plane.
package routeheaders

const (
	// Provider names the provider that answered. The ext_proc server sets it on the
	// response, and removes it from requests so that a client cannot steer routing with it.
	Provider = "x-phogate-provider"

	// Model names a configured model. The model's route matches this header exactly and
	// splits traffic over the model's clusters by weight; the ext_proc server sets it (with
	// clear_route_cache) once it has chosen the model.
	Model = "x-phogate-model"

	// MetadataNamespace is the endpoint filter_metadata namespace whose "provider" key
	// names the endpoint's provider.
	MetadataNamespace = "phogate"

	// ProviderAttribute is the ext_proc attribute expression that yields the provider of
	// the endpoint Envoy picked for an attempt.
	ProviderAttribute = "xds.upstream_host_metadata.filter_metadata['" + MetadataNamespace +
		"']['provider']"

	// FilterPhase is the gRPC metadata key with which Envoy's ext_proc filters say where
	// they run: absent on the listener's filter, PhaseUpstream on the filter that runs for
	// every upstream attempt of a model cluster.
	FilterPhase = "x-phogate-filter"

	// PhaseUpstream is the FilterPhase value of the upstream filter.
	PhaseUpstream = "upstream"

	// ClientPathPrefix is the OpenAI API prefix clients send. A provider's requests get the
	// provider's base path in its place: from the route when the listener filter did not
	// run, from the upstream filter otherwise.
	ClientPathPrefix = "/v1/"
)
