package semantic

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
)

// HNSW parameters, chosen with BenchmarkLookupWidth (index_bench_test.go) on 100,000
// built-in embeddings of generated text, whose nearest neighbours are hard to find: at equal
// latency M=32 with efConstruction 200 found the true nearest neighbour for 0.96 of queries
// where M=16 with efConstruction 100 found it for 0.90. The bottom layer has twice as many
// links, as usual. See [efSearch] for how the search width grows with the partition.
const (
	hnswM              = 32
	hnswM0             = 2 * hnswM
	hnswEfConstruction = 200
	hnswEfSearch       = 96
)

// codeAlign is the step of the dot product on codes: codes are padded with zeros to a
// multiple of it.
const codeAlign = 32

// graph is a hierarchical navigable small world graph (Malkov and Yashunin, 2016) over the
// vectors of one partition. Vectors are unit length, so similarity is the dot product.
//
// The graph walks int8 codes of the vectors rather than the float32 vectors themselves: a
// search is bound by memory latency, and a code is a quarter of the size (256 bytes at 256
// dimensions) and is compared by an AVX2 dot product on amd64. Each code carries a scale,
// the largest absolute coordinate over 127, so code·code·scale·scale approximates the float
// similarity to within 0.01; callers re-rank what the graph returns with the float vectors.
//
// It was written here rather than taken from github.com/coder/hnsw v0.6.1, which was
// evaluated first: on 50,000 clustered 256-dimension vectors its search stopped at the first
// step without improvement and found the true nearest neighbour for 7% of queries, with a p99
// of 16 ms, and it keeps a map per node and layer. This graph keeps the bottom layer's links
// and the codes in flat arrays and ends a search when the candidate list cannot improve (the
// paper's rule).
//
// A graph is not safe for concurrent use by itself: the partition holds a read lock while
// searching and a write lock while adding.
type graph struct {
	cdim     int    // code length: the vector dimension rounded up to codeAlign
	codes    []int8 // node i's code is codes[i*cdim : (i+1)*cdim]
	scales   []float32
	entry    int32 // -1 when empty
	maxLevel int
	levels   []uint8
	l0       []int32 // node i's bottom-layer links are l0[i*hnswM0 : i*hnswM0+l0n[i]]
	l0n      []uint8
	upper    [][][]int32 // upper[i][l-1]: links of node i at layer l
	rng      *rand.Rand
	ml       float64
}

func newGraph(dim int) *graph {
	cdim := (dim + codeAlign - 1) / codeAlign * codeAlign
	return &graph{cdim: cdim, entry: -1, rng: rand.New(rand.NewPCG(1, 2)),
		ml: 1 / math.Log(hnswM)}
}

// len returns the number of nodes.
func (g *graph) len() int { return len(g.levels) }

// cand is a node and its similarity to the query.
type cand struct {
	id  int32
	sim float32
}

func vecAt(vecs []float32, dim int, id int32) []float32 {
	o := int(id) * dim
	return vecs[o : o+dim : o+dim]
}

func (g *graph) code(id int32) []int8 {
	o := int(id) * g.cdim
	return g.codes[o : o+g.cdim : o+g.cdim]
}

// query is a vector in code form.
type query struct {
	code  []int8
	scale float32
}

func (g *graph) nodeQuery(id int32) query { return query{g.code(id), g.scales[id]} }

// sim returns the approximate similarity of q and node id.
func (g *graph) sim(q query, id int32) float32 {
	return float32(dotInt8(q.code, g.code(id))) * q.scale * g.scales[id]
}

// quantize writes the code of v to dst, which is at least len(v) long, zeroes the rest of
// dst and returns the code's scale.
func quantize(dst []int8, v []float32) float32 {
	var m float32
	for _, x := range v {
		m = max(m, x, -x)
	}
	clear(dst[len(v):])
	if m == 0 {
		clear(dst)
		return 0
	}
	inv := 127 / m
	for i, x := range v {
		if x >= 0 {
			dst[i] = int8(x*inv + 0.5)
		} else {
			dst[i] = int8(x*inv - 0.5)
		}
	}
	return m / 127
}

func (g *graph) links(id int32, level int) []int32 {
	if level == 0 {
		o := int(id) * hnswM0
		return g.l0[o : o+int(g.l0n[id])]
	}
	return g.upper[id][level-1]
}

func (g *graph) setLinks(id int32, level int, nb []int32) {
	if level == 0 {
		o := int(id) * hnswM0
		n := copy(g.l0[o:o+hnswM0], nb)
		g.l0n[id] = uint8(n)
		return
	}
	g.upper[id][level-1] = append(g.upper[id][level-1][:0], nb...)
}

// add appends vec as the next node and links it into the graph.
func (g *graph) add(vec []float32) {
	id := int32(g.len())
	g.codes = append(g.codes, make([]int8, g.cdim)...)
	g.scales = append(g.scales, quantize(g.code(id), vec))
	level := int(math.Floor(-math.Log(1-g.rng.Float64()) * g.ml))
	level = min(level, 16)
	g.levels = append(g.levels, uint8(level))
	g.l0 = append(g.l0, make([]int32, hnswM0)...)
	g.l0n = append(g.l0n, 0)
	var up [][]int32
	if level > 0 {
		up = make([][]int32, level)
	}
	g.upper = append(g.upper, up)
	if g.entry < 0 {
		g.entry, g.maxLevel = id, level
		return
	}

	q := g.nodeQuery(id)
	ep := cand{g.entry, g.sim(q, g.entry)}
	for l := g.maxLevel; l > level; l-- {
		ep = g.greedy(q, ep, l)
	}
	s := getSearcher(g.len())
	defer putSearcher(s)
	for l := min(level, g.maxLevel); l >= 0; l-- {
		found := g.searchLayer(s, q, ep, hnswEfConstruction, l)
		nb := g.selectNeighbors(s, found, hnswM)
		g.setLinks(id, l, nb)
		maxLinks := hnswM
		if l == 0 {
			maxLinks = hnswM0
		}
		// nb is scratch space that link reuses; id's own links are a copy.
		for _, n := range g.links(id, l) {
			g.link(s, n, id, l, maxLinks)
		}
		ep = found[0]
	}
	if level > g.maxLevel {
		g.entry, g.maxLevel = id, level
	}
}

// link adds a link from n to id at level, pruning n's links with the heuristic when full.
func (g *graph) link(s *searcher, n, id int32, level, maxLinks int) {
	cur := g.links(n, level)
	if len(cur) < maxLinks {
		if level == 0 {
			g.l0[int(n)*hnswM0+len(cur)] = id
			g.l0n[n]++
		} else {
			g.upper[n][level-1] = append(g.upper[n][level-1], id)
		}
		return
	}
	nq := g.nodeQuery(n)
	cs := s.prune[:0]
	for _, c := range cur {
		cs = append(cs, cand{c, g.sim(nq, c)})
	}
	cs = append(cs, cand{id, g.sim(nq, id)})
	slices.SortFunc(cs, bySimDesc)
	s.prune = cs
	g.setLinks(n, level, g.selectNeighbors(s, cs, maxLinks))
}

func bySimDesc(a, b cand) int {
	switch {
	case a.sim > b.sim:
		return -1
	case a.sim < b.sim:
		return 1
	}
	return int(a.id - b.id)
}

// selectNeighbors applies the paper's heuristic to candidates sorted best first: a candidate
// is kept when it is closer to the query than to every neighbour kept so far, which keeps
// links pointing in different directions. The result is valid until the next call with s.
func (g *graph) selectNeighbors(s *searcher, cs []cand, m int) []int32 {
	out := s.picked[:0]
	for _, c := range cs {
		if len(out) == m {
			break
		}
		cq := g.nodeQuery(c.id)
		keep := true
		for _, r := range out {
			if g.sim(cq, r) > c.sim {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, c.id)
		}
	}
	s.picked = out
	return out
}

// greedy walks layer level from ep to the node most similar to q.
func (g *graph) greedy(q query, ep cand, level int) cand {
	for changed := true; changed; {
		changed = false
		for _, n := range g.links(ep.id, level) {
			if sim := g.sim(q, n); sim > ep.sim {
				ep, changed = cand{n, sim}, true
			}
		}
	}
	return ep
}

// search returns up to ef nodes most similar to v by approximate similarity, best first.
// The result is valid until s is reused.
func (g *graph) search(s *searcher, v []float32, ef int) []cand {
	if g.entry < 0 {
		return nil
	}
	s.qcode = slices.Grow(s.qcode[:0], g.cdim)[:g.cdim]
	q := query{s.qcode, quantize(s.qcode, v)}
	ep := cand{g.entry, g.sim(q, g.entry)}
	for l := g.maxLevel; l > 0; l-- {
		ep = g.greedy(q, ep, l)
	}
	return g.searchLayer(s, q, ep, ef, 0)
}

// searchLayer is the paper's beam search on one layer. It returns up to ef nodes, best
// first, in a slice valid until s is reused.
func (g *graph) searchLayer(s *searcher, q query, ep cand, ef, level int) []cand {
	vis := &s.vis
	vis.next()
	vis.mark(ep.id)
	todo := &s.todo   // best candidate on top
	found := &s.found // worst result on top
	todo.c, found.c = todo.c[:0], found.c[:0]
	todo.push(ep)
	found.push(ep)
	for len(todo.c) > 0 {
		c := todo.pop()
		if len(found.c) >= ef && c.sim < found.c[0].sim {
			break
		}
		// Start loading every unseen neighbour's code before comparing the first.
		fresh := s.fresh[:0]
		for _, n := range g.links(c.id, level) {
			if !vis.seen(n) {
				vis.mark(n)
				fresh = append(fresh, n)
			}
		}
		s.fresh = fresh
		g.prefetch(fresh)
		for _, n := range fresh {
			sim := g.sim(q, n)
			if len(found.c) < ef || sim > found.c[0].sim {
				todo.push(cand{n, sim})
				found.push(cand{n, sim})
				if len(found.c) > ef {
					found.pop()
				}
			}
		}
	}
	slices.SortFunc(found.c, bySimDesc)
	return found.c
}

// candHeap is a binary heap of candidates: the most similar on top when best is set, the
// least similar otherwise.
type candHeap struct {
	c    []cand
	best bool
}

func (h *candHeap) less(i, j int) bool {
	if h.best {
		return h.c[i].sim > h.c[j].sim
	}
	return h.c[i].sim < h.c[j].sim
}

func (h *candHeap) push(x cand) {
	h.c = append(h.c, x)
	for i := len(h.c) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.c[i], h.c[p] = h.c[p], h.c[i]
		i = p
	}
}

func (h *candHeap) pop() cand {
	top := h.c[0]
	last := len(h.c) - 1
	h.c[0] = h.c[last]
	h.c = h.c[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && h.less(l, m) {
			m = l
		}
		if r < last && h.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		h.c[i], h.c[m] = h.c[m], h.c[i]
		i = m
	}
	return top
}

// searcher holds the scratch space of one search or insertion, so that neither allocates
// once the pool is warm.
type searcher struct {
	vis    visited
	todo   candHeap
	found  candHeap
	qcode  []int8
	prune  []cand
	picked []int32
	fresh  []int32
}

var searcherPool = sync.Pool{New: func() any {
	return &searcher{todo: candHeap{best: true}, found: candHeap{best: false}}
}}

// getSearcher returns a searcher for a graph of n nodes.
func getSearcher(n int) *searcher {
	s := searcherPool.Get().(*searcher)
	if len(s.vis.marks) < n {
		s.vis.marks = make([]uint32, n+n/4)
		s.vis.gen = 0
	}
	return s
}

func putSearcher(s *searcher) { searcherPool.Put(s) }

// visited marks nodes seen by one search. Marks are generation numbers, so clearing is a
// counter increment.
type visited struct {
	marks []uint32
	gen   uint32
}

func (v *visited) next() {
	v.gen++
	if v.gen == 0 {
		clear(v.marks)
		v.gen = 1
	}
}

func (v *visited) seen(id int32) bool { return v.marks[id] == v.gen }
func (v *visited) mark(id int32)      { v.marks[id] = v.gen }

// efSearch returns the search width for a graph of n nodes: hnswEfSearch up to 100,000
// nodes, then twice as much for every tenfold growth, since paths through a larger graph are
// longer and recall would drop at a fixed width. On the benchmark's 1,000,000 entries a width
// of 192 found the true nearest neighbour for 0.98 of queries, and 128 for 0.95.
func efSearch(n int) int {
	if efSearchOverride > 0 {
		return efSearchOverride
	}
	if n <= 100_000 {
		return hnswEfSearch
	}
	return int(hnswEfSearch * math.Pow(float64(n)/100_000, math.Log10(2)))
}

// efSearchOverride, when positive, replaces [efSearch]'s answer. Benchmarks set it.
var efSearchOverride int
