package config

// Routing configures the routing settings. Fields are documented where they are declared.
type Routing struct{}

func (x *Routing) applyDefaults(c *Config) {}

func (x *Routing) validate(v *validator, c *Config) {}
