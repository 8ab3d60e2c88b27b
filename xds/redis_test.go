package xds

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/phochat/phogate/routing"
	"github.com/phochat/phogate/test/testenv"
)

// testKey returns a key of the test's own and deletes it at the end.
func testKey(t *testing.T, rdb *redis.Client, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	k := prefix + ":test:" + hex.EncodeToString(b)
	t.Cleanup(func() { rdb.Del(context.Background(), k, k+":epoch") })
	return k
}

// Observations published by one replica reach every follower, with the entry's time.
func TestRedisObservationsReachFollowers(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	rdb := testenv.Redis(t)
	stream := testKey(t, rdb, ObservationStream)
	pub := NewRedisObservations(rdb, time.Second, nil)
	pub.stream = stream
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, 3)
	var followers []*routing.EndpointStats
	go func() { pub.Publish(runCtx); done <- struct{}{} }()
	for range 2 {
		st := routing.NewEndpointStats(routing.EndpointStatsOptions{})
		followers = append(followers, st)
		f := NewRedisObservations(rdb, time.Second, nil)
		f.stream = stream
		go func() { f.Follow(runCtx, st, time.Minute); done <- struct{}{} }()
	}
	defer func() {
		stop()
		for range 3 {
			<-done
		}
	}()

	for range 10 {
		pub.Observe(routing.Observation{Model: "m", Provider: "p", Endpoint: "10.0.0.1:80",
			Status: 200, Streamed: true, TTFB: 100 * time.Millisecond, Total: time.Second,
			OutputTokens: 90})
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i, st := range followers {
		for st.Observations() < 10 {
			select {
			case <-ctx.Done():
				t.Fatalf("follower %d saw %d of 10 observations", i, st.Observations())
			case <-tick.C:
			}
		}
		got := st.Snapshot(time.Now())[routing.EndpointKey{Provider: "p", Endpoint: "10.0.0.1:80"}]
		if got.TTFB != 100*time.Millisecond || got.PerToken != 10*time.Millisecond ||
			time.Since(got.Updated) > time.Minute {
			t.Errorf("follower %d: %+v, want TTFB 100ms, 10ms per token, updated recently", i, got)
		}
	}
}

func TestRedisWeightStoreFirstCommitWins(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	rdb := testenv.Redis(t)
	s := NewRedisWeightStore(rdb, time.Second)
	s.key = testKey(t, rdb, WeightKey)

	if got, err := s.Load(ctx); err != nil || got.Epoch != 0 {
		t.Fatalf("Load() on an empty store = %+v, %v; want epoch 0", got, err)
	}
	first := WeightStep{Epoch: 7, Endpoints: map[string]Shares{"p": {"a": 0.7, "b": 0.3}}}
	second := WeightStep{Epoch: 7, Endpoints: map[string]Shares{"p": {"a": 0.2, "b": 0.8}}}
	if got, err := s.Commit(ctx, first); err != nil || got.Endpoints["p"]["a"] != 0.7 {
		t.Fatalf("Commit(first) = %+v, %v", got, err)
	}
	if got, err := s.Commit(ctx, second); err != nil || got.Endpoints["p"]["a"] != 0.7 {
		t.Errorf("Commit(second, same epoch) = %+v, %v; want the first step kept", got, err)
	}
	third := WeightStep{Epoch: 8, Endpoints: second.Endpoints}
	if got, err := s.Commit(ctx, third); err != nil || got.Epoch != 8 ||
		got.Endpoints["p"]["a"] != 0.2 {
		t.Errorf("Commit(next epoch) = %+v, %v; want it stored", got, err)
	}
}
