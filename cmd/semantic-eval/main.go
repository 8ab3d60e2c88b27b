// Command semantic-eval measures the semantic cache's hit decision on labelled question
// pairs: for each pair it treats a as the stored question and b as the query, and counts a
// hit when the embeddings' cosine similarity reaches the threshold and, when enabled, the
// guard passes. The guard applies the rules the index would use with each embedder (strict
// with the built-in one, basic otherwise) unless -guard says otherwise. It prints recall
// (hits among duplicate pairs), the hit rate over all pairs and precision (duplicates among
// hits) for a range of thresholds.
//
// -half splits every pair file in two fixed halves by line: "tune" is lines 2, 4, 6, ...,
// "held-out" lines 1, 3, 5, .... Choose thresholds and guard rules on the tuning half and
// report the held-out half, whose pairs did not shape them.
//
//	go run ./cmd/semantic-eval -data ../shared/data
//	go run ./cmd/semantic-eval -data ../shared/data -half held-out
//	go run ./cmd/semantic-eval -data ../shared/data -embed-url http://127.0.0.1:8080/v1 \
//	    -embed-model text-embedding-3-small
package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/phochat/phogate/cache/semantic"
)

// datasets are the pair files read from the data directory.
var datasets = []string{"qqp-dev.jsonl.gz", "vnpara-dev.jsonl.gz"}

type options struct {
	data       string
	thresholds []float64
	dim        int
	limit      int
	embedURL   string
	embedModel string
	embedKey   string
	embedBatch int
	half       string
	guard      semantic.GuardMode
}

// Values of -half.
const (
	halfAll     = "all"
	halfTune    = "tune"
	halfHeldOut = "held-out"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "semantic-eval:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	opts, err := parseFlags(args)
	if err != nil {
		return err
	}
	if st, err := os.Stat(opts.data); err != nil || !st.IsDir() {
		return fmt.Errorf("data directory %q not found (pass -data with the folder holding "+
			"qqp-dev.jsonl.gz and vnpara-dev.jsonl.gz)", opts.data)
	}
	embedders, err := buildEmbedders(opts)
	if err != nil {
		return err
	}
	for _, name := range datasets {
		pairs, err := readPairs(filepath.Join(opts.data, name), opts.limit)
		if err != nil {
			return err
		}
		pairs = half(pairs, opts.half)
		for _, e := range embedders {
			label := name
			if opts.half != halfAll {
				label += " (" + opts.half + " half)"
			}
			mode := opts.guard.For(e)
			if err := evaluate(ctx, out, label, pairs, e, mode, opts.thresholds); err != nil {
				return err
			}
		}
	}
	return nil
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("semantic-eval", flag.ContinueOnError)
	o := &options{}
	fs.StringVar(&o.data, "data", "", "directory holding the pair files (required)")
	ths := fs.String("thresholds", "0.80,0.85,0.88,0.90,0.92,0.94,0.95,0.96,0.97,0.98,0.99,0.995",
		"comma-separated similarity thresholds")
	fs.IntVar(&o.dim, "dim", 0, "dimension of the built-in embedder (0 = default)")
	fs.IntVar(&o.limit, "limit", 0, "read at most this many pairs per file (0 = all)")
	fs.StringVar(&o.embedURL, "embed-url", "",
		"base URL of an OpenAI-compatible embeddings API, e.g. http://host/v1 (optional)")
	fs.StringVar(&o.embedModel, "embed-model", "text-embedding-3-small", "embedding model")
	fs.StringVar(&o.embedKey, "embed-key-env", "OPENAI_API_KEY",
		"environment variable holding the API key for -embed-url")
	fs.IntVar(&o.embedBatch, "embed-batch", 256, "texts per embeddings request")
	fs.StringVar(&o.half, "half", halfAll, "pairs to evaluate: all, tune (lines 2, 4, ...) "+
		"or held-out (lines 1, 3, ...)")
	guard := fs.String("guard", "auto", "guard rules: auto (strict for the built-in embedder, "+
		"basic otherwise), basic or strict")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	modes := map[string]semantic.GuardMode{"auto": semantic.GuardAuto,
		"basic": semantic.GuardBasic, "strict": semantic.GuardStrict}
	m, ok := modes[*guard]
	if !ok {
		return nil, fmt.Errorf("bad -guard %q: want auto, basic or strict", *guard)
	}
	o.guard = m
	switch o.half {
	case halfAll, halfTune, halfHeldOut:
	default:
		return nil, fmt.Errorf("bad -half %q: want all, tune or held-out", o.half)
	}
	if o.data == "" {
		return nil, errors.New("-data is required")
	}
	for _, s := range strings.Split(*ths, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || v <= 0 || v > 1 {
			return nil, fmt.Errorf("bad threshold %q: want a number in (0, 1]", s)
		}
		o.thresholds = append(o.thresholds, v)
	}
	return o, nil
}

func buildEmbedders(o *options) ([]semantic.Embedder, error) {
	h, err := semantic.NewHashEmbedder(o.dim)
	if err != nil {
		return nil, err
	}
	out := []semantic.Embedder{h}
	if o.embedURL == "" {
		return out, nil
	}
	he, err := semantic.NewHTTPEmbedder(semantic.HTTPEmbedderConfig{
		BaseURL:  o.embedURL,
		Model:    o.embedModel,
		APIKey:   os.Getenv(o.embedKey),
		Timeout:  2 * time.Minute,
		MaxBatch: o.embedBatch,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	return append(out, he), nil
}

type pair struct {
	A     string `json:"a"`
	B     string `json:"b"`
	Label int    `json:"label"`
}

func readPairs(path string, limit int) ([]pair, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening pairs: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var pairs []pair
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for line := 1; sc.Scan(); line++ {
		var p pair
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, line, err)
		}
		pairs = append(pairs, p)
		if limit > 0 && len(pairs) == limit {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%s holds no pairs", path)
	}
	return pairs, nil
}

// half returns the pairs of one half: lines 2, 4, ... for tune, lines 1, 3, ... for
// held-out, all of them otherwise.
func half(pairs []pair, which string) []pair {
	if which == halfAll {
		return pairs
	}
	first := 1 // index of line 2
	if which == halfHeldOut {
		first = 0
	}
	out := make([]pair, 0, len(pairs)/2+1)
	for i := first; i < len(pairs); i += 2 {
		out = append(out, pairs[i])
	}
	return out
}

// scored is one pair's similarity and guard verdict.
type scored struct {
	sim   float64
	guard semantic.GuardReason
	dup   bool
}

func evaluate(ctx context.Context, out io.Writer, name string, pairs []pair,
	e semantic.Embedder, guard semantic.GuardMode, thresholds []float64) error {
	start := time.Now()
	va, err := embedAll(ctx, e, pairs, func(p pair) string { return p.A })
	if err != nil {
		return err
	}
	vb, err := embedAll(ctx, e, pairs, func(p pair) string { return p.B })
	if err != nil {
		return err
	}
	s := make([]scored, len(pairs))
	rejected := map[semantic.GuardReason]int{}
	dups := 0
	for i, p := range pairs {
		s[i] = scored{sim: semantic.Cosine(va[i], vb[i]), guard: guard.Check(p.A, p.B),
			dup: p.Label == 1}
		if s[i].dup {
			dups++
		}
		if s[i].guard != "" {
			rejected[s[i].guard]++
		}
	}
	fmt.Fprintf(out, "\n%s  embedder=%s  guard=%s  pairs=%d  duplicates=%d  (%s)\n", name,
		e.Name(), guardName(guard), len(pairs), dups, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(out, "guard rejects (all pairs): %v\n", rejected)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "threshold\tguard\thits\tdup hits\trecall\thits/all\tprecision\t")
	for _, th := range thresholds {
		for _, guard := range []bool{false, true} {
			hits, good := 0, 0
			for _, x := range s {
				if x.sim >= th && (!guard || x.guard == "") {
					hits++
					if x.dup {
						good++
					}
				}
			}
			prec := "-"
			if hits > 0 {
				prec = fmt.Sprintf("%.3f", float64(good)/float64(hits))
			}
			fmt.Fprintf(tw, "%.3f\t%s\t%d\t%d\t%.3f\t%.3f\t%s\t\n", th, onOff(guard), hits, good,
				float64(good)/float64(max(dups, 1)), float64(hits)/float64(len(pairs)), prec)
		}
	}
	return tw.Flush()
}

func guardName(m semantic.GuardMode) string {
	if m == semantic.GuardStrict {
		return "strict"
	}
	return "basic"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// embedAll embeds one side of every pair, in chunks so an HTTP embedder sees bounded
// requests.
func embedAll(ctx context.Context, e semantic.Embedder, pairs []pair,
	side func(pair) string) ([][]float32, error) {
	const chunk = 1024
	out := make([][]float32, 0, len(pairs))
	texts := make([]string, 0, chunk)
	for i := 0; i < len(pairs); i += chunk {
		texts = texts[:0]
		for _, p := range pairs[i:min(i+chunk, len(pairs))] {
			texts = append(texts, side(p))
		}
		vs, err := e.Embed(ctx, texts)
		if err != nil {
			return nil, fmt.Errorf("embedding with %s: %w", e.Name(), err)
		}
		out = append(out, vs...)
	}
	return out, nil
}
