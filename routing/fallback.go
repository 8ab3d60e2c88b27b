package routing

import (
	"fmt"

	"github.com/phochat/phogate/internal/config"
)

// FallbackPicker picks the provider of a model: the first by priority (then file order)
// that is not out of use after repeated failures ([EndpointStats.ProviderUsable]). When
// every provider of the model is out of use it picks the first, so a request is never
// refused for want of a healthy provider.
//
// Fallback happens here, before Envoy routes, because providers of one model may name it
// differently and Envoy cannot rewrite the body per cluster: Envoy's retries move a request
// between the endpoints of the chosen provider, and this picker moves later requests to the
// next provider once the chosen one keeps failing. It is safe for concurrent use.
type FallbackPicker struct {
	cfg    *config.Config
	health *EndpointStats
}

// NewFallbackPicker returns a picker over cfg's providers, judged by health.
func NewFallbackPicker(cfg *config.Config, health *EndpointStats) *FallbackPicker {
	return &FallbackPicker{cfg: cfg, health: health}
}

// Pick returns the provider for model and its entry for the model, or an error wrapping
// [ErrNoRoute] when no provider serves it. Its signature matches extproc.ProviderPicker.
func (f *FallbackPicker) Pick(model *config.Model) (*config.Provider, config.ProviderModel, error) {
	providers := f.cfg.ProvidersFor(model.Name)
	if len(providers) == 0 {
		return nil, config.ProviderModel{}, fmt.Errorf("model %q: %w", model.Name, ErrNoRoute)
	}
	chosen := providers[0]
	for _, p := range providers {
		if f.health.ProviderUsable(p.Name) {
			chosen = p
			break
		}
	}
	pm, _ := chosen.ModelFor(model.Name)
	return chosen, pm, nil
}
