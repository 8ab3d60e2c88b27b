// Package routeheaders names the request headers that steer Envoy's routing. The ext_proc
// server sets them; the xDS routes match on them. Keeping them here lets both sides agree
// without the ext_proc server importing the control plane.
package routeheaders

const (
	// Provider selects the upstream provider by its configured name. Envoy's route for the
	// provider matches this header exactly, so the ext_proc server sets it (with
	// clear_route_cache) once it has chosen where a request goes.
	Provider = "x-phogate-provider"

	// Model names a configured chat model. A route matching it splits traffic over the
	// providers serving the model by weight. It is used when no provider was chosen, for
	// example by gRPC xDS clients that follow the same route configuration.
	Model = "x-phogate-model"
)
