package semantic

import (
	"slices"
	"sync"
	"time"
)

// partition holds the entries of one partition string: their vectors in one flat array
// indexed by slot, and an HNSW graph over the slots once the partition has graphMin live
// entries. Removed entries leave a dead slot, which the graph still walks through but
// searches skip; the partition is rebuilt without them when they outnumber the live ones.
type partition struct {
	dim int

	mu    sync.RWMutex
	vecs  []float32
	slots []*entry // nil for a dead slot
	live  int
	g     *graph
}

// rerankExtra is how many more graph results than asked for are re-ranked with the float
// vectors. The codes' similarity is off by less than 0.01 (see TestQuantizeSimilarity), so
// the true best is among the first few; each re-ranked result costs a read of a float
// vector from memory.
const rerankExtra = 16

// hit is a search result.
type hit struct {
	e   *entry
	sim float32
}

func newPartition(dim int) *partition { return &partition{dim: dim} }

// add appends e and links it into the graph, building the graph when the partition reaches
// graphMin entries.
func (p *partition) add(e *entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.part, e.slot = p, int32(len(p.slots))
	p.slots = append(p.slots, e)
	p.vecs = append(p.vecs, e.Vector...)
	// The vector lives in vecs only: a slice into vecs would pin its old backing arrays.
	e.Vector = nil
	p.live++
	switch {
	case p.g != nil:
		p.g.add(vecAt(p.vecs, p.dim, e.slot))
	case p.live >= graphMin:
		p.buildGraph()
	}
}

// buildGraph links every slot into a new graph.
func (p *partition) buildGraph() {
	p.g = newGraph(p.dim)
	for i := range p.slots {
		p.g.add(vecAt(p.vecs, p.dim, int32(i)))
	}
}

// remove marks e's slot dead, and rebuilds the partition when dead slots outnumber live
// ones.
//
// TODO: the rebuild runs under the partition's write lock, so lookups in a partition of a
// million entries wait for seconds about once per million evictions; build the new graph
// on a copy and swap it in.
func (p *partition) remove(e *entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slots[e.slot] = nil
	e.dead = true
	p.live--
	if dead := len(p.slots) - p.live; dead > p.live && dead >= 64 {
		p.compact()
	}
}

// compact drops dead slots and rebuilds the graph when the partition is still large.
func (p *partition) compact() {
	vecs := make([]float32, 0, p.live*p.dim)
	slots := make([]*entry, 0, p.live)
	for _, e := range p.slots {
		if e == nil {
			continue
		}
		vecs = append(vecs, vecAt(p.vecs, p.dim, e.slot)...)
		e.slot = int32(len(slots))
		slots = append(slots, e)
	}
	p.vecs, p.slots, p.g = vecs, slots, nil
	if p.live >= graphMin {
		p.buildGraph()
	}
}

// search returns up to k live, unexpired entries with similarity at least min to q, most
// similar first.
func (p *partition) search(q []float32, k int, minSim float32, now time.Time) []hit {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]hit, 0, k+rerankExtra)
	keep := func(slot int32, sim float32) {
		e := p.slots[slot]
		if sim < minSim || e == nil || !e.expires.After(now) {
			return
		}
		out = append(out, hit{e, sim})
	}
	if p.g == nil {
		for i := range p.slots {
			if p.slots[i] != nil {
				keep(int32(i), dot(q, vecAt(p.vecs, p.dim, int32(i))))
			}
		}
	} else {
		// The graph ranks by approximate similarity; re-rank its best with the float
		// vectors.
		s := getSearcher(p.g.len())
		found := p.g.search(s, q, max(efSearch(p.g.len()), k))
		for _, c := range found[:min(len(found), k+rerankExtra)] {
			keep(c.id, dot(q, vecAt(p.vecs, p.dim, c.id)))
		}
		putSearcher(s)
	}
	slices.SortFunc(out, func(a, b hit) int {
		switch {
		case a.sim > b.sim:
			return -1
		case a.sim < b.sim:
			return 1
		}
		return 0
	})
	if len(out) > k {
		out = out[:k]
	}
	return out
}
