package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrFlightFailed is returned by [Flight.Wait] when the identical request in flight gave no
// answer to share: it failed, was not storable, took longer than the collapse wait, or the
// cache closed. The caller then goes upstream itself.
var ErrFlightFailed = errors.New("no answer from the identical request in flight")

// Flight outcomes published to other replicas, and collapsed-request metric results.
const (
	flightDone      = "done"
	flightAbandoned = "abandoned"
	resultAbandoned = "abandoned"
	resultTimeout   = "timeout"
	resultCanceled  = "canceled"
)

// Flight is one request's part in collapsing identical requests: the leader goes upstream and
// ends the flight with [Flight.Complete] or [Flight.Abandon]; every other request calls
// [Flight.Wait] for the leader's answer.
//
// Collapsing works within a replica through memory and across replicas through Redis: a short
// lease (SET NX PX, held at most the collapse wait) names the leader, and the leader announces
// the end of its flight on one shared pub/sub channel. One goroutine per replica waits on
// Redis for each key, re-reading the answer when notified and, in case a notification is lost,
// every poll interval; the other requests of that replica share its wait.
type Flight struct {
	c      *Cache
	key    Key
	f      *flight // nil when collapsing is off
	leader bool
	once   sync.Once
}

// flight is the shared state of all requests for one key in one replica.
type flight struct {
	key     Key
	started time.Time
	done    chan struct{}
	once    sync.Once
	notify  chan string // outcomes published by the leader of another replica
	entry   *Entry
	layer   Layer
	err     error
	result  string // the collapsed-metric result of a failed flight
	// lease is the leader's Redis lease token; empty when the leader holds none.
	lease string
}

type flightTable struct {
	mu sync.Mutex
	m  map[string]*flight
}

func (t *flightTable) init() { t.m = map[string]*flight{} }

// Leader reports whether this request should go upstream and end the flight.
func (fl *Flight) Leader() bool { return fl.leader }

// Begin joins the flight of key. The first request for a key (in all replicas sharing Redis)
// becomes the leader; the others wait for it with [Flight.Wait]. When collapsing is off, every
// request leads. Before leading, Begin looks the key up again, since an identical request may
// have stored its answer since the caller's lookup; then the Flight is not a leader and Wait
// returns that answer at once.
//
// ctx bounds the Redis calls of Begin only. Only an uncacheable key is an error.
func (c *Cache) Begin(ctx context.Context, key Key) (*Flight, error) {
	if !key.Cacheable() {
		return nil, fmt.Errorf("beginning flight: key is %s", key)
	}
	if !c.opts.Collapse {
		return &Flight{c: c, key: key, leader: true}, nil
	}
	f, joined := c.flights.join(key, c.opts.Now(), c.opts.CollapseWait)
	if joined {
		return &Flight{c: c, key: key, f: f}, nil
	}

	// The second lookup, as in groupcache: an answer stored since the caller's miss.
	if r, layer, ok := c.lookupQuiet(ctx, key); ok {
		c.resolve(f, r.entry, layer)
		return &Flight{c: c, key: key, f: f}, nil
	}

	lease, acquired := c.acquireLease(ctx, key)
	if !acquired {
		c.waitRemote(f)
		return &Flight{c: c, key: key, f: f}, nil
	}
	f.lease = lease
	return &Flight{c: c, key: key, f: f, leader: true}, nil
}

// join returns the flight of key in this replica and whether it already existed. A flight older
// than wait whose leader has not ended it is replaced, so a leader that never ends its flight
// holds up others only once.
func (t *flightTable) join(key Key, now time.Time, wait time.Duration) (*flight, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.m[key.ID]; f != nil && now.Sub(f.started) < wait {
		return f, true
	}
	f := &flight{key: key, started: now, done: make(chan struct{}), notify: make(chan string, 1)}
	t.m[key.ID] = f
	return f, false
}

func (t *flightTable) remove(f *flight) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[f.key.ID] == f {
		delete(t.m, f.key.ID)
	}
}

// deliver passes an outcome published by another replica to the flight of the key.
func (t *flightTable) deliver(keyID, outcome string) {
	t.mu.Lock()
	f := t.m[keyID]
	t.mu.Unlock()
	if f == nil {
		return
	}
	select {
	case f.notify <- outcome:
	default: // a notification is already pending; the waiter re-reads Redis anyway
	}
}

// resolve ends a flight once with an answer, waking its waiters.
func (c *Cache) resolve(f *flight, e *Entry, layer Layer) {
	f.once.Do(func() {
		f.entry, f.layer = e, layer
		c.flights.remove(f)
		close(f.done)
	})
}

// fail ends a flight once without an answer; result is the collapsed-metric result its
// waiters count.
func (c *Cache) fail(f *flight, result, why string) {
	f.once.Do(func() {
		f.err = fmt.Errorf("%w: %s", ErrFlightFailed, why)
		f.result = result
		c.flights.remove(f)
		close(f.done)
	})
}

// Wait waits for the leader's answer, at most the collapse wait, and returns it with the layer
// it came from. It returns an error wrapping [ErrFlightFailed] when there is no answer to
// share, and ctx's error when ctx ends first; in both cases the caller goes upstream itself
// (and may store the answer with [Cache.Store]). The returned entry is shared: do not modify
// it. Wait must not be called by the leader.
func (fl *Flight) Wait(ctx context.Context) (*Entry, Layer, error) {
	if fl.leader || fl.f == nil {
		return nil, "", errors.New("waiting on a flight: the leader does not wait")
	}
	t := time.NewTimer(fl.c.opts.CollapseWait)
	defer t.Stop()
	select {
	case <-fl.f.done:
	case <-ctx.Done():
		fl.c.m.collapsed.WithLabelValues(resultCanceled).Inc()
		return nil, "", fmt.Errorf("waiting on a flight: %w", ctx.Err())
	case <-t.C:
		fl.c.m.collapsed.WithLabelValues(resultTimeout).Inc()
		return nil, "", fmt.Errorf("%w: waited %s", ErrFlightFailed, fl.c.opts.CollapseWait)
	}
	if fl.f.err != nil {
		fl.c.m.collapsed.WithLabelValues(fl.f.result).Inc()
		return nil, "", fl.f.err
	}
	fl.c.m.collapsed.WithLabelValues(resultHit).Inc()
	return fl.f.entry, fl.f.layer, nil
}

// Complete stores the leader's answer for ttl (see [Cache.Store]) and hands it to the waiting
// requests of every replica. Only the leader's first call to Complete or Abandon counts; ctx
// bounds the Redis calls.
func (fl *Flight) Complete(ctx context.Context, e *Entry, ttl time.Duration) error {
	if !fl.leader {
		return errors.New("completing a flight: not the leader")
	}
	var err error
	fl.once.Do(func() {
		err = fl.c.Store(ctx, fl.key, e, ttl)
		if fl.f == nil {
			return
		}
		if err != nil || ttl <= 0 {
			fl.c.fail(fl.f, resultAbandoned, "leader stored nothing")
			fl.c.endLease(ctx, fl.f, flightAbandoned)
			return
		}
		fl.c.resolve(fl.f, e, LayerL1)
		fl.c.endLease(ctx, fl.f, flightDone)
	})
	return err
}

// Abandon ends the leader's flight without an answer: the waiting requests go upstream
// themselves. Use it when the upstream answer failed or is not [Storable].
func (fl *Flight) Abandon() {
	if !fl.leader {
		return
	}
	fl.once.Do(func() {
		if fl.f == nil {
			return
		}
		fl.c.fail(fl.f, resultAbandoned, "leader gave up")
		fl.c.endLease(context.Background(), fl.f, flightAbandoned)
	})
}

// Redis names for collapsing.
func (c *Cache) leaseKey(key Key) string { return c.opts.KeyPrefix + "lease:" + key.ID }
func (c *Cache) flightChannel() string   { return c.opts.KeyPrefix + "flights" }

// acquireLease takes the Redis lease of key and returns its token. Without Redis, or when
// Redis fails, the request leads within this replica only.
func (c *Cache) acquireLease(ctx context.Context, key Key) (string, bool) {
	if !c.redisReady() {
		return "", true
	}
	var b [16]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	rctx, cancel := context.WithTimeout(ctx, c.opts.RedisTimeout)
	defer cancel()
	ok, err := c.rdb.SetNX(rctx, c.leaseKey(key), token, c.opts.CollapseWait).Result()
	if err != nil {
		c.redisFailed(ctx, err)
		return "", true
	}
	c.redisWorked()
	return token, ok
}

// endLeaseScript deletes the lease when the caller still holds it, and publishes the outcome:
// "done" always (waiters then re-read the answer), "abandoned" only from the holder of the
// lease, so a leader whose lease expired cannot send away the waiters of the next one.
var endLeaseScript = redis.NewScript(`
local held = redis.call('GET', KEYS[1]) == ARGV[1]
if held then redis.call('DEL', KEYS[1]) end
if held or ARGV[3] == 'done' then redis.call('PUBLISH', ARGV[2], ARGV[4] .. ' ' .. ARGV[3]) end
return held and 1 or 0
`)

// endLease releases the lease of a leader's flight and tells other replicas the outcome.
func (c *Cache) endLease(ctx context.Context, f *flight, outcome string) {
	if f.lease == "" || !c.redisReady() {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.RedisTimeout)
	defer cancel()
	err := endLeaseScript.Run(rctx, c.rdb, []string{c.leaseKey(f.key)},
		f.lease, c.flightChannel(), outcome, f.key.ID).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		c.redisFailed(ctx, err)
	}
}

// startSubscriber listens on the flight channel for the whole life of the cache. The client
// resubscribes by itself after a connection loss; waiters poll meanwhile.
func (c *Cache) startSubscriber() {
	ps := c.rdb.Subscribe(c.ctx, c.flightChannel())
	ch := ps.Channel()
	c.wg.Go(func() {
		defer ps.Close()
		for {
			select {
			case <-c.ctx.Done():
				return
			case msg, ok := <-ch:
				if !ok {
					return
				}
				keyID, outcome, _ := strings.Cut(msg.Payload, " ")
				c.flights.deliver(keyID, outcome)
			}
		}
	})
}

// waitRemote waits, on one goroutine, for the leader of another replica, and resolves f with
// its answer read from Redis, or with an error when it gives up, its lease disappears without
// an answer, or the collapse wait ends.
func (c *Cache) waitRemote(f *flight) {
	c.wg.Go(func() {
		deadline := time.NewTimer(c.opts.CollapseWait)
		defer deadline.Stop()
		poll := time.NewTicker(c.opts.PollInterval)
		defer poll.Stop()
		if c.checkRemote(f, false) {
			return
		}
		for {
			select {
			case <-c.ctx.Done():
				c.fail(f, resultAbandoned, "cache closed")
				return
			case <-deadline.C:
				c.fail(f, resultTimeout, "no answer within "+c.opts.CollapseWait.String())
				return
			case outcome := <-f.notify:
				if outcome == flightAbandoned {
					c.fail(f, resultAbandoned, "leader gave up")
					return
				}
				if c.checkRemote(f, false) {
					return
				}
			case <-poll.C:
				if c.checkRemote(f, true) {
					return
				}
			}
		}
	})
}

// checkRemote reads the answer of f's key from Redis and resolves f when it is there. With
// checkLease, a missing lease without an answer also resolves f: the leader is gone.
func (c *Cache) checkRemote(f *flight, checkLease bool) bool {
	r, err := c.getL2(c.ctx, f.key)
	if r != nil {
		c.setL1(f.key, r)
		c.resolve(f, r.entry, LayerL2)
		return true
	}
	if errors.Is(err, errRedisSkipped) {
		c.fail(f, resultAbandoned, "redis unavailable")
		return true
	}
	if !checkLease || err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.RedisTimeout)
	defer cancel()
	n, err := c.rdb.Exists(ctx, c.leaseKey(f.key)).Result()
	if err == nil && n == 0 {
		c.fail(f, resultAbandoned, "leader gone")
		return true
	}
	return false
}
