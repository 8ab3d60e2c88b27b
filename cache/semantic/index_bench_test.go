package semantic

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchDim is the built-in embedder's default dimension, so the benchmark measures the
// vectors the index holds by default.
const benchDim = DefaultHashDim

// benchIndex is an index of n entries in one partition, built once per size.
type benchIndex struct {
	ix          *Index
	queries     [][]float32
	bytesPerEnt float64
	build       time.Duration
}

var (
	benchMu      sync.Mutex
	benchIndexes = map[int]*benchIndex{}
)

// benchTexts generates n questions from a Zipf-distributed vocabulary of 20,000 made-up
// words, each a template of 4 to 12 words, and every tenth a light rewording of an earlier
// one, so the vectors have the structure of embedded text: shared frequent words, rare
// content words and near-duplicates.
type benchTexts struct {
	r     *rand.Rand
	zipf  *rand.Zipf
	words []string
	done  []string
}

func newBenchTexts(seed uint64) *benchTexts {
	r := rand.New(rand.NewPCG(seed, 7))
	t := &benchTexts{r: r, zipf: rand.NewZipf(r, 1.1, 2, 19_999)}
	syll := []string{"ka", "lo", "mi", "ren", "tu", "sa", "po", "vi", "dan", "el", "or", "qu"}
	for range 20_000 {
		var w string
		for range 2 + r.IntN(3) {
			w += syll[r.IntN(len(syll))]
		}
		t.words = append(t.words, w)
	}
	return t
}

func (t *benchTexts) next() string {
	if len(t.done) > 10 && t.r.IntN(10) == 0 {
		old := strings.Fields(t.done[t.r.IntN(len(t.done))])
		old[t.r.IntN(len(old))] = t.words[t.zipf.Uint64()]
		return strings.Join(old, " ")
	}
	n := 4 + t.r.IntN(9)
	ws := make([]string, n)
	for i := range ws {
		ws[i] = t.words[t.zipf.Uint64()]
	}
	s := strings.Join(ws, " ")
	if len(t.done) < 100_000 {
		t.done = append(t.done, s)
	}
	return s
}

func getBenchIndex(b *testing.B, n int) *benchIndex {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if bi := benchIndexes[n]; bi != nil {
		return bi
	}
	texts := newBenchTexts(uint64(n))
	emb, err := NewHashEmbedder(benchDim)
	if err != nil {
		b.Fatalf("NewHashEmbedder: %v", err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	ix, err := New(context.Background(), Config{MaxEntries: n, Embedder: benchEmbedder{}})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	for i := range n {
		v := emb.EmbedText(texts.next())
		key := strconv.Itoa(i)
		if _, err := ix.AddVector(context.Background(), "bench", key, key, v); err != nil {
			b.Fatalf("AddVector: %v", err)
		}
	}
	build := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	bi := &benchIndex{ix: ix, build: build,
		bytesPerEnt: float64(after.HeapAlloc-before.HeapAlloc) / float64(n)}
	// Queries are new questions from the same generator: some are rewordings of stored
	// ones, most are not, as in a cache.
	for range 1000 {
		bi.queries = append(bi.queries, emb.EmbedText(texts.next()))
	}
	benchIndexes[n] = bi
	return bi
}

// benchEmbedder declares the benchmark's dimension; vectors are passed in directly.
type benchEmbedder struct{}

func (benchEmbedder) Embed(context.Context, []string) ([][]float32, error) { return nil, nil }
func (benchEmbedder) Name() string                                         { return "bench" }
func (benchEmbedder) Dim() int                                             { return benchDim }

// benchSizes are the partition sizes of the lookup benchmarks: 100,000 entries, and
// 1,000,000 when PHOGATE_BENCH_1M=1 (building that takes minutes on two cores).
func benchSizes() []int {
	sizes := []int{100_000}
	if os.Getenv("PHOGATE_BENCH_1M") == "1" {
		sizes = append(sizes, 1_000_000)
	}
	return sizes
}

// BenchmarkLookup measures LookupVector in one partition of each of [benchSizes]. It
// reports p50 and p99 latency, recall@1 of the index against exact search (over all queries,
// and over those whose nearest entry is a near duplicate), memory per entry and the build
// time.
func BenchmarkLookup(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			bi := getBenchIndex(b, n)
			measureLookups(b, bi)
			b.ReportMetric(bi.bytesPerEnt, "bytes/entry")
			b.ReportMetric(bi.build.Seconds(), "build-s")
		})
	}
}

// BenchmarkLookupWidth measures latency and recall for a range of search widths (efSearch),
// to choose [efSearch] for each partition size.
func BenchmarkLookupWidth(b *testing.B) {
	defer func(old int) { efSearchOverride = old }(efSearchOverride)
	for _, n := range benchSizes() {
		for _, ef := range []int{48, 64, 96, 128, 192, 256, 384} {
			b.Run(fmt.Sprintf("entries=%d/ef=%d", n, ef), func(b *testing.B) {
				bi := getBenchIndex(b, n)
				efSearchOverride = ef
				measureLookups(b, bi)
			})
		}
	}
}

// measureLookups runs b.N lookups and reports their p50 and p99 latency and the index's
// recall.
func measureLookups(b *testing.B, bi *benchIndex) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		q := bi.queries[i%len(bi.queries)]
		start := time.Now()
		bi.ix.LookupVector("bench", "question", q, 0.5)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	all, near := recallAt1(bi)
	b.ReportMetric(all, "recall@1")
	b.ReportMetric(near, "recall@1-near")
}

// recallQueries is how many queries recallAt1 checks against an exact scan.
const recallQueries = 500

// nearSim is the similarity from which recallAt1 counts a query's nearest entry as a near
// duplicate: the queries a cache can answer.
const nearSim = 0.9

// recallAt1 returns the share of queries whose most similar entry found by the index is the
// most similar entry found by exact search, over all queries and over those whose most
// similar entry is at least nearSim similar (-1 when there are none).
func recallAt1(bi *benchIndex) (all, near float64) {
	p := bi.ix.parts["bench"]
	qs := bi.queries[:recallQueries]
	good, nearN, nearGood := 0, 0, 0
	for _, q := range qs {
		got := p.search(q, 1, -2, time.Now())
		best, bestSim := int32(-1), float32(-2)
		for i := range p.slots {
			if s := dot(q, vecAt(p.vecs, benchDim, int32(i))); s > bestSim {
				best, bestSim = int32(i), s
			}
		}
		hit := len(got) > 0 && got[0].e.slot == best
		if hit {
			good++
		}
		if bestSim >= nearSim {
			nearN++
			if hit {
				nearGood++
			}
		}
	}
	near = -1
	if nearN > 0 {
		near = float64(nearGood) / float64(nearN)
	}
	return float64(good) / float64(len(qs)), near
}
