package config

// Ledger configures the ledger settings. Fields are documented where they are declared.
type Ledger struct{}

func (x *Ledger) applyDefaults(c *Config) {}

func (x *Ledger) validate(v *validator, c *Config) {}
