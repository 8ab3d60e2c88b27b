package config

// Balancing configures the balancing settings. Fields are documented where they are declared.
type Balancing struct{}

func (x *Balancing) applyDefaults(c *Config) {}

func (x *Balancing) validate(v *validator, c *Config) {}
