package semantic

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/phochat/phogate/test/testenv"
)

// testPrefix starts the keys of the tests' indexes; each test has a Redis DB of its own.
const testPrefix = "phogate-test:"

// waitHit polls ix until text hits in partition or ctx ends; replication is asynchronous.
func waitHit(ctx context.Context, t *testing.T, ix *Index, partition, text string) Match {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if m, ok, _ := ix.Lookup(ctx, partition, text, 0); ok {
			return m
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Lookup(%q, %q) never hit: %v", partition, text, ctx.Err())
		case <-tick.C:
		}
	}
}

func TestRedisSharing(t *testing.T) {
	rdb, prefix := testenv.Redis(t), testPrefix
	ctx := testContext(t)
	a := newTestIndex(t, Config{Redis: rdb, KeyPrefix: prefix})
	b := newTestIndex(t, Config{Redis: rdb, KeyPrefix: prefix})

	e, err := a.Add(ctx, "gpt-4o", "How do I cook pho?", "answer-1")
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if m := waitHit(ctx, t, b, "gpt-4o", "how do I cook pho"); m.EntryID != e.ID ||
		m.AnswerKey != "answer-1" {
		t.Errorf("replica b found %+v, want entry %s with answer-1", m, e.ID)
	}
	if _, err := b.Add(ctx, "gpt-4o", "Turn on the light", "answer-2"); err != nil {
		t.Fatalf("Add: %v", err)
	}
	waitHit(ctx, t, a, "gpt-4o", "turn on the light")
	if _, ok, reason := b.Lookup(ctx, "other", "How do I cook pho?", 0); ok {
		t.Errorf("Lookup in another partition = %v, want a miss", reason)
	}

	// A replica started later loads both entries, and its own additions are not doubled
	// when they come back through the stream.
	c := newTestIndex(t, Config{Redis: rdb, KeyPrefix: prefix})
	for _, q := range []string{"How do I cook pho?", "Turn on the light"} {
		if _, ok, reason := c.Lookup(ctx, "gpt-4o", q, 0); !ok {
			t.Errorf("new replica Lookup(%q) = %v, want a hit", q, reason)
		}
	}
	if _, err := c.Add(ctx, "gpt-4o", "What is 2+3?", "answer-3"); err != nil {
		t.Fatalf("Add: %v", err)
	}
	waitHit(ctx, t, a, "gpt-4o", "what is 2+3")
	if got := c.Len(); got != 3 {
		t.Errorf("new replica Len() = %d, want 3", got)
	}
}

func TestRedisSkipsExpiredAndMalformed(t *testing.T) {
	rdb, prefix := testenv.Redis(t), testPrefix
	ctx := testContext(t)
	clock := &fakeClock{now: time.Now()}
	a := newTestIndex(t, Config{Redis: rdb, KeyPrefix: prefix, TTL: time.Minute, Now: clock.Now})
	if _, err := a.Add(ctx, "p", "old question", "old"); err != nil {
		t.Fatalf("Add: %v", err)
	}
	// A malformed stream entry from some other writer is skipped.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: a.stream,
		Values: []any{fieldID, "bad", fieldVector, "abc"}}).Err(); err != nil {
		t.Fatalf("XAdd: %v", err)
	}
	clock.Advance(2 * time.Minute)
	b := newTestIndex(t, Config{Redis: rdb, KeyPrefix: prefix, TTL: time.Minute, Now: clock.Now})
	if got := b.Len(); got != 0 {
		t.Errorf("Len() after loading an expired and a malformed entry = %d, want 0", got)
	}
}
