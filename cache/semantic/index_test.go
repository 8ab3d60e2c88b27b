package semantic

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// defaultTestTimeout bounds every test's context.
const defaultTestTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestIndex(t *testing.T, cfg Config) *Index {
	t.Helper()
	ix, err := New(testContext(t), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { ix.Close() })
	return ix
}

type lookupResult struct {
	AnswerKey string
	OK        bool
	Reason    Reason
	Guard     GuardReason
}

func lookup(t *testing.T, ix *Index, partition, text string) lookupResult {
	t.Helper()
	m, ok, reason := ix.Lookup(testContext(t), partition, text, 0)
	return lookupResult{AnswerKey: m.AnswerKey, OK: ok, Reason: reason, Guard: m.Guard}
}

func TestLookup(t *testing.T) {
	reg := prometheus.NewRegistry()
	ix := newTestIndex(t, Config{Metrics: NewMetrics(reg)})
	ctx := testContext(t)
	stored := []struct{ partition, text, key string }{
		{"gpt-4o", "What are the most competitive jobs in Atlanta?", "atlanta"},
		{"gpt-4o", "turn on the light in the kitchen", "on"},
		{"gpt-4o", "what is 2+3", "sum"},
		{"gpt-4o-mini", "How do I cook pho at home?", "pho-mini"},
	}
	for _, s := range stored {
		if _, err := ix.Add(ctx, s.partition, s.text, s.key); err != nil {
			t.Fatalf("Add(%q): %v", s.text, err)
		}
	}
	tests := []struct {
		name, partition, text string
		threshold             float64
		want                  lookupResult
	}{
		{"reworded", "gpt-4o", "what are the most competitive jobs in Atlanta", 0,
			lookupResult{AnswerKey: "atlanta", OK: true, Reason: ReasonHit}},
		{"other city", "gpt-4o", "What are the most competitive jobs in Toronto?", 0.5,
			lookupResult{AnswerKey: "atlanta", Reason: ReasonGuardRejected, Guard: GuardEntity}},
		{"toggle", "gpt-4o", "turn off the light in the kitchen", 0.5,
			lookupResult{AnswerKey: "on", Reason: ReasonGuardRejected, Guard: GuardAntonym}},
		{"other sum", "gpt-4o", "what is 2+4", 0.5,
			lookupResult{AnswerKey: "sum", Reason: ReasonGuardRejected, Guard: GuardNumbers}},
		{"same sum", "gpt-4o", "What is 2 + 3?", 0,
			lookupResult{AnswerKey: "sum", OK: true, Reason: ReasonHit}},
		{"other partition", "gpt-4o", "How do I cook pho at home?", 0,
			lookupResult{Reason: ReasonMiss}},
		{"own partition", "gpt-4o-mini", "how do i cook pho at home", 0,
			lookupResult{AnswerKey: "pho-mini", OK: true, Reason: ReasonHit}},
		{"unknown partition", "claude", "turn on the light in the kitchen", 0,
			lookupResult{Reason: ReasonMiss}},
		{"unrelated", "gpt-4o", "Write a haiku about autumn", 0,
			lookupResult{Reason: ReasonMiss}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok, reason := ix.Lookup(testContext(t), tt.partition, tt.text, tt.threshold)
			got := lookupResult{AnswerKey: m.AnswerKey, OK: ok, Reason: reason, Guard: m.Guard}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Lookup(%q, %q) (-want +got):\n%s", tt.partition, tt.text, diff)
			}
		})
	}
	if got := testutil.ToFloat64(ix.metrics.Lookups.WithLabelValues(resultHit)); got != 3 {
		t.Errorf("hits counted = %v, want 3", got)
	}
	if got := testutil.ToFloat64(ix.metrics.Entries); got != 4 {
		t.Errorf("entries gauge = %v, want 4", got)
	}
}

func TestLookupGuardDisabled(t *testing.T) {
	ix := newTestIndex(t, Config{DisableGuard: true})
	if _, err := ix.Add(testContext(t), "p", "what is 2+3", "sum"); err != nil {
		t.Fatalf("Add: %v", err)
	}
	// The hashed features of "3" and "4" differ, so only a low threshold matches.
	m, ok, reason := ix.Lookup(testContext(t), "p", "what is 2+4", 0.3)
	if !ok || reason != ReasonHit || m.AnswerKey != "sum" {
		t.Errorf("Lookup without guard = %+v, %v, %v; want a hit on sum", m, ok, reason)
	}
}

func TestTTLAndEviction(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	ix := newTestIndex(t, Config{TTL: time.Minute, MaxEntries: 3, Now: clock.Now})
	ctx := testContext(t)
	add := func(text string) {
		t.Helper()
		if _, err := ix.Add(ctx, "p", text, text); err != nil {
			t.Fatalf("Add(%q): %v", text, err)
		}
	}
	add("how do I cook pho")
	clock.Advance(30 * time.Second)
	add("how do I bake bread")
	if got := lookup(t, ix, "p", "how do I cook pho"); !got.OK {
		t.Errorf("Lookup before expiry = %+v, want a hit", got)
	}

	clock.Advance(31 * time.Second)
	if got := lookup(t, ix, "p", "how do I cook pho"); got.OK {
		t.Errorf("Lookup after expiry = %+v, want a miss", got)
	}
	if got := lookup(t, ix, "p", "how do I bake bread"); !got.OK {
		t.Errorf("Lookup of the younger entry = %+v, want a hit", got)
	}

	// Adding sweeps the expired entry; then the size bound evicts the oldest.
	add("how do I brew tea")
	add("how do I grill fish")
	add("how do I steam rice")
	if got := ix.Len(); got != 3 {
		t.Errorf("Len() = %d, want 3", got)
	}
	if got := lookup(t, ix, "p", "how do I bake bread"); got.OK {
		t.Errorf("Lookup of the evicted entry = %+v, want a miss", got)
	}
	if got := lookup(t, ix, "p", "how do I steam rice"); !got.OK {
		t.Errorf("Lookup of the newest entry = %+v, want a hit", got)
	}
}

// TestGraphPartition fills one partition past graphMin, so lookups go through the HNSW
// graph, then evicts most of it so the partition is compacted.
func TestGraphPartition(t *testing.T) {
	defer func(old int) { graphMin = old }(graphMin)
	graphMin = 64
	n := graphMin + 100
	ix := newTestIndex(t, Config{MaxEntries: n})
	ctx := testContext(t)
	text := func(i int) string {
		return fmt.Sprintf("question %d about topic%d and subject%d", i, i%97, i%89)
	}
	for i := range n {
		if _, err := ix.Add(ctx, "big", text(i), fmt.Sprint(i)); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	for _, i := range []int{0, 7, graphMin, n - 1} {
		m, ok, reason := ix.Lookup(ctx, "big", text(i), 0)
		if !ok || m.AnswerKey != fmt.Sprint(i) {
			t.Errorf("Lookup(%q) = %+v, %v, %v; want a hit on %d", text(i), m, ok, reason, i)
		}
	}

	// Replace every entry: the old ones are evicted, the partition compacts.
	for i := n; i < 2*n; i++ {
		if _, err := ix.Add(ctx, "big", text(i), fmt.Sprint(i)); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	if got := ix.Len(); got != n {
		t.Errorf("Len() = %d, want %d", got, n)
	}
	for _, i := range []int{3, 2*n - 1} {
		m, ok, _ := ix.Lookup(ctx, "big", text(i), 0)
		wantOK := i >= n
		if ok != wantOK || ok && m.AnswerKey != fmt.Sprint(i) {
			t.Errorf("Lookup(%q) = %+v, %v; want hit %v", text(i), m, ok, wantOK)
		}
	}
}

func TestBadInput(t *testing.T) {
	ix := newTestIndex(t, Config{})
	ctx := testContext(t)
	if _, err := ix.AddVector(ctx, "p", "x", "k", []float32{1, 2}); err == nil {
		t.Error("AddVector with a short vector succeeded, want an error")
	}
	if _, ok, reason := ix.LookupVector("p", "x", []float32{1}, 0); ok || reason != ReasonMiss {
		t.Errorf("LookupVector with a short vector = %v, %v; want a miss", ok, reason)
	}
	if _, err := New(ctx, Config{Threshold: 2}); err == nil {
		t.Error("New with threshold 2 succeeded, want an error")
	}
	if _, ok, _ := ix.Lookup(ctx, "p", "", 0); ok {
		t.Error("Lookup of an empty text hit")
	}
}
