package extproc

import (
	"errors"

	"github.com/phochat/phogate/internal/config"
)

// ErrNoProvider is returned by a [ProviderPicker] when no provider can serve the model.
var ErrNoProvider = errors.New("no provider serves the model")

// ProviderPicker chooses the provider for a request to a configured model. Implementations
// must be safe for concurrent use.
type ProviderPicker interface {
	// Pick returns the provider and the provider's entry for model, or an error wrapping
	// [ErrNoProvider].
	Pick(model *config.Model) (*config.Provider, config.ProviderModel, error)
}

// firstProvider picks the first provider by priority and file order.
type firstProvider struct{ cfg *config.Config }

var _ ProviderPicker = firstProvider{}

func (f firstProvider) Pick(model *config.Model) (*config.Provider, config.ProviderModel, error) {
	for _, p := range f.cfg.ProvidersFor(model.Name) {
		if pm, ok := p.ModelFor(model.Name); ok {
			return p, pm, nil
		}
	}
	return nil, config.ProviderModel{}, ErrNoProvider
}
