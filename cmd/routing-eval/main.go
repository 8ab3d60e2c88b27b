// Command routing-eval measures phogate's complexity-based model choice on labelled data:
// GSM8K and MT-Bench prompts answered by a strong and a weak model (RouteLLM's GPT-4 and
// Mixtral labels), priced from a price table.
//
// For each dataset it prints one Markdown table: always-strong, always-weak, the router at its
// default settings, a sweep of the complexity thresholds and of the quality/cost weights, and
// the oracle that calls the strong model only where its answer is better. Quality is GSM8K
// accuracy or the MT-Bench mean score; cost is the files' token counts times the prices.
//
// Usage:
//
//	go run ./cmd/routing-eval -data ../shared/data
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "routing-eval:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(1)
	}
}

// Defaults for the model pair. Mixtral-8x7B-Instruct, the weak model of the labels, has no
// price in the table; gpt-3.5-turbo ($0.50 in, $1.50 out per 1M tokens) stands in for it, a
// model of similar quality and close to Mixtral's usual hosted price.
const (
	defaultStrong = "gpt-4-1106-preview"
	defaultWeak   = "gpt-3.5-turbo"
)

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("routing-eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "../shared/data",
		"`dir`ectory holding routing-dev/ and prices.json")
	strong := fs.String("strong-price", defaultStrong,
		"prices.json `model` priced as the strong model")
	weak := fs.String("weak-price", defaultWeak, "prices.json `model` priced as the weak model")
	clean := fs.Bool("drop-contaminated", false,
		"leave out prompts that are in RouteLLM's router training data")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := checkDataDir(*dataDir); err != nil {
		return err
	}

	prices, err := readPrices(filepath.Join(*dataDir, pricesFile), *strong, *weak)
	if err != nil {
		return err
	}
	p := pair{strong: *strong, weak: *weak, pStrong: prices[*strong], pWeak: prices[*weak]}
	gsm, err := readGSM8K(filepath.Join(*dataDir, gsm8kFile))
	if err != nil {
		return err
	}
	mt, err := readMTBench(filepath.Join(*dataDir, mtBenchFile))
	if err != nil {
		return err
	}
	if *clean {
		gsm, mt = dropContaminated(gsm), dropContaminated(mt)
	}

	fmt.Fprintf(stdout, "strong = %s ($%g in / $%g out per 1M), weak = Mixtral-8x7B priced as "+
		"%s ($%g / $%g)\n", p.strong, p.pStrong.Input, p.pStrong.Output, p.weak, p.pWeak.Input,
		p.pWeak.Output)
	for _, ds := range []struct {
		title, format string
		items         []item
	}{
		{fmt.Sprintf("GSM8K (%d prompts; quality = accuracy)", len(gsm)), "%.3f", gsm},
		{fmt.Sprintf("MT-Bench (%d prompts; quality = mean score 1-10)", len(mt)), "%.2f", mt},
	} {
		res, err := evalDataset(ds.items, p)
		if err != nil {
			return err
		}
		writeTable(stdout, ds.title, res, ds.format)
	}
	return nil
}

func dropContaminated(items []item) []item {
	out := items[:0:0]
	for _, it := range items {
		if !it.contaminated {
			out = append(out, it)
		}
	}
	return out
}
