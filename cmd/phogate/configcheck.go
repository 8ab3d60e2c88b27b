package main

import (
	"fmt"
	"io"

	"github.com/phochat/phogate/internal/config"
	"github.com/phochat/phogate/xds"
)

// configCheck validates a configuration file and every Envoy resource generated from it.
func configCheck(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usageError{"usage: phogate config check FILE"}
	}
	cfg, err := config.Load(args[0])
	if err != nil {
		return err
	}
	res, err := xds.Build(cfg, xds.BuildOptions{})
	if err != nil {
		return fmt.Errorf("%s: generating Envoy resources: %w", args[0], err)
	}
	if err := xds.Validate(res); err != nil {
		return fmt.Errorf("%s: generated Envoy resources are invalid: %w", args[0], err)
	}
	fmt.Fprintf(stdout, "%s: ok (%d providers, %d models)\n", args[0], len(cfg.Providers),
		len(cfg.Models))
	return nil
}
