package routing

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeClock is a clock the test moves by hand.
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

func TestLatencyStatsEWMA(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := &fakeClock{now: start}
	s := NewLatencyStats(10*time.Second, clock.Now)

	type step struct {
		advance            time.Duration
		ttft, total        time.Duration
		tokens             int
		wantTTFT, wantPerT time.Duration
	}
	steps := []step{
		// The first observation is the average.
		{0, time.Second, 11 * time.Second, 100, time.Second, 100 * time.Millisecond},
		// One half-life later a new observation takes half the weight.
		{10 * time.Second, 3 * time.Second, 13 * time.Second, 50, 2 * time.Second,
			150 * time.Millisecond},
		// An observation at the same instant takes the minimum weight, 0.1.
		{0, 12 * time.Second, 12 * time.Second, 0, 3 * time.Second, 150 * time.Millisecond},
		// A non-streamed answer (ttft 0) leaves TTFT alone; its whole time counts per token.
		{10 * time.Second, 0, 5 * time.Second, 100, 3 * time.Second, 100 * time.Millisecond},
		// Negative durations are ignored.
		{time.Hour, -time.Second, time.Second, 10, 3 * time.Second, 100 * time.Millisecond},
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		s.Observe("m", st.ttft, st.total, st.tokens)
		got, ok := s.Get("m")
		if !ok {
			t.Fatalf("step %d: Get(m) found nothing", i)
		}
		if got.TTFT != st.wantTTFT || got.PerToken != st.wantPerT {
			t.Errorf("step %d: Get(m) = TTFT %v, per token %v; want %v, %v", i, got.TTFT,
				got.PerToken, st.wantTTFT, st.wantPerT)
		}
	}

	want := map[string]Latency{"m": {TTFT: 3 * time.Second, PerToken: 100 * time.Millisecond,
		Samples: 4, Updated: start.Add(20 * time.Second)}}
	snap := s.Snapshot()
	if diff := cmp.Diff(want, snap); diff != "" {
		t.Errorf("Snapshot() (-want +got):\n%s", diff)
	}
	snap["m"] = Latency{}
	if got, _ := s.Get("m"); got.Samples != 4 {
		t.Errorf("changing a snapshot changed the stats: %+v", got)
	}
	if _, ok := s.Get("other"); ok {
		t.Errorf("Get(other) found a model never observed")
	}
	if got := want["m"].Expected(10); got != 4*time.Second {
		t.Errorf("Expected(10) = %v, want 4s", got)
	}
}

func TestLatencyStatsConcurrent(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	s := NewLatencyStats(time.Second, clock.Now)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				clock.Advance(time.Millisecond)
				s.Observe([]string{"a", "b"}[g%2], time.Second, 2*time.Second, 10)
				if i%10 == 0 {
					s.Snapshot()
				}
			}
		})
	}
	wg.Wait()
	snap := s.Snapshot()
	if snap["a"].Samples+snap["b"].Samples != 800 {
		t.Errorf("Snapshot() samples = %d + %d, want 800", snap["a"].Samples,
			snap["b"].Samples)
	}
	if got := snap["a"].TTFT; got != time.Second {
		t.Errorf("Snapshot()[a].TTFT = %v, want 1s", got)
	}
}
