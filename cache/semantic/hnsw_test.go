package semantic

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func randomUnit(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	normalize(v)
	return v
}

func TestDotInt8(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for range 500 {
		n := codeAlign * (1 + r.IntN(12))
		a, b := make([]int8, n), make([]int8, n)
		for i := range a {
			a[i], b[i] = int8(r.IntN(256)-128), int8(r.IntN(256)-128)
		}
		if got, want := dotInt8(a, b), dotInt8Go(a, b); got != want {
			t.Fatalf("dotInt8 of %d values = %d, want %d", n, got, want)
		}
	}
	extreme := make([]int8, 256)
	for i := range extreme {
		extreme[i] = -128
	}
	if got, want := dotInt8(extreme, extreme), int32(256*128*128); got != want {
		t.Errorf("dotInt8 of -128s = %d, want %d", got, want)
	}
}

// TestQuantizeSimilarity checks that code similarity stays close to float similarity, which
// the re-ranking relies on.
func TestQuantizeSimilarity(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, dim := range []int{16, 100, 256} {
		g := newGraph(dim)
		ca, cb := make([]int8, g.cdim), make([]int8, g.cdim)
		for range 200 {
			a, b := randomUnit(r, dim), randomUnit(r, dim)
			qa := query{ca, quantize(ca, a)}
			qb := query{cb, quantize(cb, b)}
			approx := float32(dotInt8(qa.code, qb.code)) * qa.scale * qb.scale
			if d := math.Abs(float64(approx - dot(a, b))); d > 0.01 {
				t.Fatalf("dim %d: code similarity %v, float %v", dim, approx, dot(a, b))
			}
		}
	}
	if s := quantize(make([]int8, 32), make([]float32, 32)); s != 0 {
		t.Errorf("quantize(zero vector) scale = %v, want 0", s)
	}
}

// newTestPartition returns a partition of n random unit vectors with a graph.
func newTestPartition(t *testing.T, n, dim int) *partition {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 3))
	p := newPartition(dim)
	for i := range n {
		e := &entry{expires: time.Now().Add(time.Hour)}
		e.Vector = randomUnit(r, dim)
		e.ID = string(rune('a' + i%26))
		p.add(e)
	}
	if p.g == nil {
		t.Fatalf("partition of %d entries has no graph (graphMin %d)", n, graphMin)
	}
	return p
}

// TestGraphFindsStoredVectors searches for vectors the graph holds: each must come back
// first, with similarity 1.
func TestGraphFindsStoredVectors(t *testing.T) {
	defer func(old int) { graphMin = old }(graphMin)
	graphMin = 64
	const n, dim = 3000, 64
	p := newTestPartition(t, n, dim)
	for i := 0; i < n; i += 7 {
		q := vecAt(p.vecs, dim, int32(i))
		got := p.search(q, 1, 0.5, time.Now())
		if len(got) != 1 || got[0].e.slot != int32(i) || got[0].sim < 0.999 {
			t.Fatalf("search(vector %d) = %+v, want slot %d with similarity 1", i, got, i)
		}
	}
}

func TestSearchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	defer func(old int) { graphMin = old }(graphMin)
	graphMin = 64
	p := newTestPartition(t, 2000, 64)
	q := randomUnit(rand.New(rand.NewPCG(4, 4)), 64)
	now := time.Now()
	// The result slice is the only allocation; the graph's scratch space is pooled.
	if n := testing.AllocsPerRun(100, func() { p.search(q, 4, -1, now) }); n > 1 {
		t.Errorf("partition search allocates %v times, want at most 1", n)
	}
}

func BenchmarkDotInt8(b *testing.B) {
	x, y := make([]int8, DefaultHashDim), make([]int8, DefaultHashDim)
	for i := range x {
		x[i], y[i] = int8(i), int8(-i)
	}
	var s int32
	for b.Loop() {
		s += dotInt8(x, y)
	}
	_ = s
}
