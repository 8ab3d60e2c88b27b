package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/phochat/phogate/test/testenv"
)

// defaultTestTimeout bounds every test's context.
const defaultTestTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// uniquePrefix keeps tests that share a Redis apart.
func uniquePrefix() string {
	var b [6]byte
	rand.Read(b[:])
	return "phogate-test:" + hex.EncodeToString(b[:]) + ":"
}

// newTestCache creates a cache with defaults for tests; opts fields set win.
func newTestCache(t testing.TB, opts Options) *Cache {
	t.Helper()
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func testKey(t testing.TB, text string) Key {
	t.Helper()
	req := `{"model":"m","messages":[{"role":"user","content":"` + text + `"}]}`
	k, err := BuildKey([]byte(req), "m", "global", KeyOptions{CaseFold: true})
	if err != nil {
		t.Fatalf("BuildKey = %v", err)
	}
	return k
}

func testEntry(t testing.TB) *Entry {
	t.Helper()
	e, err := EntryFromJSON([]byte(completionJSON))
	if err != nil {
		t.Fatalf("EntryFromJSON = %v", err)
	}
	return e
}

func TestL2RoundTripFillsL1(t *testing.T) {
	ctx := testContext(t)
	rdb := testenv.Redis(t)
	prefix := uniquePrefix()
	a := newTestCache(t, Options{Redis: rdb, KeyPrefix: prefix})
	b := newTestCache(t, Options{Redis: rdb, KeyPrefix: prefix})
	key, e := testKey(t, "round trip"), testEntry(t)

	if err := a.Store(ctx, key, e, time.Minute); err != nil {
		t.Fatalf("Store = %v", err)
	}
	if got, layer, ok := a.Lookup(ctx, key); !ok || layer != LayerL1 || got != e {
		t.Errorf("a.Lookup = %v, %q, %v, want the stored entry from l1", got, layer, ok)
	}
	got, layer, ok := b.Lookup(ctx, key)
	if !ok || layer != LayerL2 {
		t.Fatalf("b.Lookup = %v, %q, %v, want a hit in l2", got, layer, ok)
	}
	if diff := cmp.Diff(e, got); diff != "" {
		t.Errorf("entry from l2 (-want +got):\n%s", diff)
	}
	if _, layer, ok := b.Lookup(ctx, key); !ok || layer != LayerL1 {
		t.Errorf("second b.Lookup = %q, %v, want a hit in l1", layer, ok)
	}
	if n := testutil.ToFloat64(b.m.lookups.WithLabelValues("l2", "hit")); n != 1 {
		t.Errorf("l2 hits = %v, want 1", n)
	}
	if n := testutil.ToFloat64(b.m.bytes.WithLabelValues("l1")); n <= 0 {
		t.Errorf("l1 bytes = %v, want > 0", n)
	}
	if _, _, ok := b.Lookup(ctx, testKey(t, "absent")); ok {
		t.Errorf("Lookup(absent) hit")
	}
}

func TestL2ExpiresWithTTL(t *testing.T) {
	ctx := testContext(t)
	rdb := testenv.Redis(t)
	prefix := uniquePrefix()
	a := newTestCache(t, Options{Redis: rdb, KeyPrefix: prefix})
	b := newTestCache(t, Options{Redis: rdb, KeyPrefix: prefix})
	key := testKey(t, "short ttl")

	if err := a.Store(ctx, key, testEntry(t), 200*time.Millisecond); err != nil {
		t.Fatalf("Store = %v", err)
	}
	pttl, err := rdb.PTTL(ctx, a.redisKey(key)).Result()
	if err != nil || pttl <= 0 || pttl > 200*time.Millisecond {
		t.Fatalf("PTTL = %v, %v, want within (0, 200ms]", pttl, err)
	}
	// Wait for Redis's own expiry.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for rdb.Exists(ctx, a.redisKey(key)).Val() == 1 {
		select {
		case <-ctx.Done():
			t.Fatalf("value never expired")
		case <-tick.C:
		}
	}
	if _, _, ok := b.Lookup(ctx, key); ok {
		t.Errorf("Lookup after expiry hit")
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func TestL1TTLAndMaxAge(t *testing.T) {
	ctx := testContext(t)
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	c := newTestCache(t, Options{Now: clock.Now})
	key := testKey(t, "memory only")
	if err := c.Store(ctx, key, testEntry(t), time.Minute); err != nil {
		t.Fatalf("Store = %v", err)
	}
	clock.Advance(30 * time.Second)
	if _, _, ok := c.LookupFresh(ctx, key, 10*time.Second); ok {
		t.Errorf("LookupFresh(max age 10s) of a 30s old answer hit")
	}
	if _, _, ok := c.LookupFresh(ctx, key, time.Minute); !ok {
		t.Errorf("LookupFresh(max age 1m) of a 30s old answer missed")
	}
	clock.Advance(31 * time.Second)
	if _, _, ok := c.Lookup(ctx, key); ok {
		t.Errorf("Lookup after the TTL hit")
	}
	if err := c.Store(ctx, key, testEntry(t), 0); err != nil {
		t.Errorf("Store(ttl 0) = %v", err)
	}
	if _, _, ok := c.Lookup(ctx, key); ok {
		t.Errorf("Store(ttl 0) stored")
	}
	if err := c.Store(ctx, Key{Reason: "n > 1"}, testEntry(t), time.Minute); err == nil {
		t.Errorf("Store(uncacheable key) = nil error")
	}
}

func TestL1BoundedByBytes(t *testing.T) {
	ctx := testContext(t)
	c := newTestCache(t, Options{L1MaxBytes: 64 << 10})
	for i := range 200 {
		if err := c.Store(ctx, testKey(t, "k"+hex.EncodeToString([]byte{byte(i)})),
			testEntry(t), time.Minute); err != nil {
			t.Fatalf("Store = %v", err)
		}
	}
	c.l1.CleanUp()
	if got := c.l1.WeightedSize(); got > 64<<10 {
		t.Errorf("l1 weighted size = %d, want at most %d", got, 64<<10)
	}
	if got := testutil.ToFloat64(c.m.bytes.WithLabelValues("l1")); got > 64<<10 || got <= 0 {
		t.Errorf("l1 bytes gauge = %v, want within (0, %d]", got, 64<<10)
	}
	if got := testutil.ToFloat64(c.m.evictions.WithLabelValues("l1")); got == 0 {
		t.Errorf("l1 evictions = 0, want some")
	}
}

func TestUnknownValueVersionIsMiss(t *testing.T) {
	ctx := testContext(t)
	rdb := testenv.Redis(t)
	c := newTestCache(t, Options{Redis: rdb, KeyPrefix: uniquePrefix()})
	key := testKey(t, "future format")
	if err := rdb.Set(ctx, c.redisKey(key), "\x07garbage from a newer gateway", time.Minute).
		Err(); err != nil {
		t.Fatalf("SET = %v", err)
	}
	if got, _, ok := c.Lookup(ctx, key); ok {
		t.Errorf("Lookup of an unknown format = %v, want a miss", got)
	}
	if !c.RedisUp() {
		t.Errorf("an unknown value marked Redis down")
	}
}

// countingHandler counts log records by level.
type countingHandler struct {
	warns atomic.Int32
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.warns.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

func TestRedisOutageDegradesToL1(t *testing.T) {
	ctx := testContext(t)
	url, stopRedis, restartRedis := testenv.StartRedis(t)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL(%q) = %v", url, err)
	}
	opt.MaxRetries = -1
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	logs := &countingHandler{}
	c := newTestCache(t, Options{
		Redis:         rdb,
		Logger:        slog.New(logs),
		ProbeInterval: 20 * time.Millisecond,
		RedisTimeout:  200 * time.Millisecond,
	})
	before := testKey(t, "before the outage")
	if err := c.Store(ctx, before, testEntry(t), time.Minute); err != nil {
		t.Fatalf("Store = %v", err)
	}

	stopRedis()
	during := testKey(t, "during the outage")
	for range 5 {
		if err := c.Store(ctx, during, testEntry(t), time.Minute); err != nil {
			t.Fatalf("Store during outage = %v", err)
		}
		if _, layer, ok := c.Lookup(ctx, during); !ok || layer != LayerL1 {
			t.Errorf("Lookup during outage = %q, %v, want l1 hit", layer, ok)
		}
		if _, _, ok := c.Lookup(ctx, testKey(t, "never stored")); ok {
			t.Errorf("Lookup(never stored) hit")
		}
	}
	if c.RedisUp() {
		t.Errorf("RedisUp() = true during the outage")
	}
	if got := testutil.ToFloat64(c.m.redisUp); got != 0 {
		t.Errorf("redis_up gauge = %v during the outage, want 0", got)
	}
	if got := logs.warns.Load(); got != 1 {
		t.Errorf("warnings during the outage = %d, want 1", got)
	}

	restartRedis()
	waitFor(ctx, t, "redis to be used again", c.RedisUp)
	after := testKey(t, "after the outage")
	if err := c.Store(ctx, after, testEntry(t), time.Minute); err != nil {
		t.Fatalf("Store after outage = %v", err)
	}
	if n := rdb.Exists(ctx, c.redisKey(after)).Val(); n != 1 {
		t.Errorf("value stored after recovery is not in Redis")
	}
	if got := testutil.ToFloat64(c.m.redisUp); got != 1 {
		t.Errorf("redis_up gauge = %v after recovery, want 1", got)
	}
	if got := logs.warns.Load(); got != 1 {
		t.Errorf("warnings = %d, want 1", got)
	}
}

func TestCollapseAcrossReplicas(t *testing.T) {
	ctx := testContext(t)
	rdb := testenv.Redis(t)
	prefix := uniquePrefix()
	opts := Options{Redis: rdb, KeyPrefix: prefix, Collapse: true, CollapseWait: 20 * time.Second}
	replicas := []*Cache{newTestCache(t, opts), newTestCache(t, opts)}
	key, e := testKey(t, "collapse me"), testEntry(t)

	const requests = 50
	var (
		leaders atomic.Int32
		begun   sync.WaitGroup
		done    sync.WaitGroup
		errs    = make(chan error, requests)
		start   = make(chan struct{})
	)
	begun.Add(requests)
	for i := range requests {
		c := replicas[i%2]
		done.Go(func() {
			<-start
			fl, err := c.Begin(ctx, key)
			begun.Done()
			if err != nil {
				errs <- err
				return
			}
			if fl.Leader() {
				leaders.Add(1)
				begun.Wait() // every request has joined before the answer comes
				errs <- fl.Complete(ctx, e, time.Minute)
				return
			}
			got, _, err := fl.Wait(ctx)
			if err == nil && got.ID != e.ID {
				err = errors.New("waiter got another entry: " + got.ID)
			}
			errs <- err
		})
	}
	close(start)
	done.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("request: %v", err)
		}
	}
	if n := leaders.Load(); n != 1 {
		t.Errorf("leaders = %d, want 1", n)
	}
	var hits float64
	for _, c := range replicas {
		hits += testutil.ToFloat64(c.m.collapsed.WithLabelValues("hit"))
	}
	if hits != requests-1 {
		t.Errorf("collapsed hits = %v, want %d", hits, requests-1)
	}
}

func TestCollapseAbandon(t *testing.T) {
	ctx := testContext(t)
	rdb := testenv.Redis(t)
	opts := Options{Redis: rdb, KeyPrefix: uniquePrefix(), Collapse: true}
	a, b := newTestCache(t, opts), newTestCache(t, opts)
	key := testKey(t, "abandoned")

	leader, err := a.Begin(ctx, key)
	if err != nil || !leader.Leader() {
		t.Fatalf("a.Begin = %v, leader %v", err, leader != nil && leader.Leader())
	}
	local, _ := a.Begin(ctx, key)
	remote, _ := b.Begin(ctx, key)
	if local.Leader() || remote.Leader() {
		t.Fatalf("second and third Begin lead")
	}
	leader.Abandon()
	for name, fl := range map[string]*Flight{"local": local, "remote": remote} {
		if _, _, err := fl.Wait(ctx); !errors.Is(err, ErrFlightFailed) {
			t.Errorf("%s Wait = %v, want ErrFlightFailed", name, err)
		}
	}
	// The next request leads again.
	next, err := b.Begin(ctx, key)
	if err != nil || !next.Leader() {
		t.Errorf("Begin after abandon: leader = %v, %v", next != nil && next.Leader(), err)
	}
	next.Abandon()
}

func TestCollapseTimeoutAndSecondLookup(t *testing.T) {
	ctx := testContext(t)
	c := newTestCache(t, Options{Collapse: true, CollapseWait: 50 * time.Millisecond})
	key := testKey(t, "slow leader")
	leader, _ := c.Begin(ctx, key)
	follower, _ := c.Begin(ctx, key)
	if _, _, err := follower.Wait(ctx); !errors.Is(err, ErrFlightFailed) {
		t.Errorf("Wait on a silent leader = %v, want ErrFlightFailed", err)
	}
	leader.Abandon()

	// An answer stored between the caller's lookup and Begin is found by Begin.
	if err := c.Store(ctx, key, testEntry(t), time.Minute); err != nil {
		t.Fatalf("Store = %v", err)
	}
	fl, _ := c.Begin(ctx, key)
	if fl.Leader() {
		t.Fatalf("Begin after Store leads")
	}
	if got, layer, err := fl.Wait(ctx); err != nil || got == nil || layer != LayerL1 {
		t.Errorf("Wait = %v, %q, %v", got, layer, err)
	}
}

func TestCollapseDisabled(t *testing.T) {
	ctx := testContext(t)
	c := newTestCache(t, Options{})
	key := testKey(t, "no collapse")
	for range 3 {
		fl, err := c.Begin(ctx, key)
		if err != nil || !fl.Leader() {
			t.Fatalf("Begin = %v, leader %v", err, fl != nil && fl.Leader())
		}
	}
	fl, _ := c.Begin(ctx, key)
	if err := fl.Complete(ctx, testEntry(t), time.Minute); err != nil {
		t.Fatalf("Complete = %v", err)
	}
	if _, _, ok := c.Lookup(ctx, key); !ok {
		t.Errorf("Complete without collapsing stored nothing")
	}
	if _, err := c.Begin(ctx, Key{Reason: "x"}); err == nil {
		t.Errorf("Begin(uncacheable) = nil error")
	}
}

func TestRecordSaved(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry(), "gpt-4o")
	m.RecordSaved("gpt-4o", 0.5)
	m.RecordSaved("client-made-up", 0.25)
	if got := testutil.ToFloat64(m.savedUSD.WithLabelValues("gpt-4o")); got != 0.5 {
		t.Errorf("saved gpt-4o = %v, want 0.5", got)
	}
	if got := testutil.ToFloat64(m.savedUSD.WithLabelValues("unknown")); got != 0.25 {
		t.Errorf("saved unknown = %v, want 0.25", got)
	}
}

func BenchmarkLookupL1(b *testing.B) {
	ctx := testContext(b)
	c := newTestCache(b, Options{})
	key := testKey(b, "bench")
	if err := c.Store(ctx, key, testEntry(b), time.Hour); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := c.Lookup(ctx, key); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkLookupL2(b *testing.B) {
	ctx := testContext(b)
	rdb := testenv.Redis(b)
	c := newTestCache(b, Options{Redis: rdb, KeyPrefix: uniquePrefix()})
	key := testKey(b, "bench")
	if err := c.Store(ctx, key, testEntry(b), time.Hour); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rdb.Del(context.Background(), c.redisKey(key)) })
	b.ReportAllocs()
	for b.Loop() {
		c.l1.Invalidate(key.ID)
		if _, layer, ok := c.Lookup(ctx, key); !ok || layer != LayerL2 {
			b.Fatal("no l2 hit")
		}
	}
}
