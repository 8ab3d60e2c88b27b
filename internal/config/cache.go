package config

// Cache configures the cache settings. Fields are documented where they are declared.
type Cache struct{}

func (x *Cache) applyDefaults(c *Config) {}

func (x *Cache) validate(v *validator, c *Config) {}
