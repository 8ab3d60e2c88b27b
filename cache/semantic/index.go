// Package semantic is phogate's semantic response cache: it finds an earlier question that
// means the same as a new one, so the earlier answer can be served.
//
// Only the last user message is compared. Everything else that shapes an answer (model,
// system prompt, earlier turns, tools, sampling settings, tenant scope) is folded by the
// caller into an opaque partition string, which must match exactly; a multi-turn conversation
// is cached with its earlier turns in the partition. Each partition has its own index: exact
// search while it is small, an HNSW graph once it grows (see [graph]).
//
// A hit needs a cosine similarity at or above the threshold and a pass from the guard, which
// rejects near-identical questions that differ in a number, a negation, a toggle or a name
// ([Guard]); with the built-in embedder it also rejects short questions that differ in more
// than articles, auxiliaries, word endings and punctuation ([StrictGuard]). The answer
// itself is stored elsewhere (the exact cache); an entry holds the answer's key. Entries are
// shared between replicas through a Redis stream (see redis.go).
package semantic

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of [Config].
const (
	DefaultThreshold  = 0.95
	DefaultTTL        = 24 * time.Hour
	DefaultMaxEntries = 1_000_000
	DefaultCandidates = 4
	DefaultKeyPrefix  = "phogate:semantic:"
)

// graphMin is the partition size from which an HNSW graph is built. Below it an exact scan
// is cheaper than walking a graph (about 0.1 ms at 1,024 vectors of 256 dimensions) and
// always exact. Tests lower it.
var graphMin = 1024

// sweepBatch bounds the expired entries removed by one Add.
const sweepBatch = 64

// Config configures an [Index].
type Config struct {
	// Embedder embeds texts. Nil means the built-in [HashEmbedder] of [DefaultHashDim].
	Embedder Embedder
	// Redis, when set, shares entries with other replicas. Nil keeps entries in this process.
	Redis redis.UniversalClient
	// RedisTimeout bounds publishing one entry, which happens on a request's path. Zero
	// means 50ms.
	RedisTimeout time.Duration
	// KeyPrefix prefixes Redis keys. Empty means [DefaultKeyPrefix].
	KeyPrefix string
	// TTL is how long an entry lives. Zero means [DefaultTTL].
	TTL time.Duration
	// MaxEntries bounds the live entries over all partitions; the oldest is evicted first.
	// Zero means [DefaultMaxEntries].
	MaxEntries int
	// Threshold is the similarity used when a lookup passes 0. Zero means
	// [DefaultThreshold].
	Threshold float64
	// Candidates is how many of the most similar entries above the threshold the guard may
	// try before a lookup gives up. Zero means [DefaultCandidates].
	Candidates int
	// DisableGuard turns the [Guard] off: a hit needs the similarity only.
	DisableGuard bool
	// GuardMode selects the guard's rules. Zero means [GuardAuto]: strict with the built-in
	// embedder, basic with any other.
	GuardMode GuardMode
	// Now is the clock. Nil means [time.Now].
	Now func() time.Time
	// Logger receives lifecycle and Redis messages; nil discards them.
	Logger *slog.Logger
	// Metrics receives the index's metrics. Nil means unregistered metrics.
	Metrics *Metrics
}

// Entry is one cached question.
type Entry struct {
	// ID identifies the entry across replicas.
	ID string
	// Partition is the caller's partition string.
	Partition string
	// Text is the question (the last user message). The guard compares it with the query.
	Text string
	// AnswerKey is the exact-cache key of the answer, opaque to this package.
	AnswerKey string
	// Vector is the unit-length embedding of Text.
	Vector []float32
	// Created is when the entry was added.
	Created time.Time
	// TTL is how long after Created the entry lives.
	TTL time.Duration
}

// Match is the entry a lookup found.
type Match struct {
	// EntryID is the entry's [Entry.ID].
	EntryID string
	// AnswerKey is the entry's [Entry.AnswerKey].
	AnswerKey string
	// Similarity is the cosine similarity of the query and the entry.
	Similarity float64
	// Guard is why the guard rejected the entry; empty on a hit.
	Guard GuardReason
}

// Reason is the outcome of a lookup.
type Reason string

// Lookup outcomes.
const (
	// ReasonHit: an entry is similar enough and passed the guard.
	ReasonHit Reason = "hit"
	// ReasonMiss: no entry reached the threshold.
	ReasonMiss Reason = "miss"
	// ReasonGuardRejected: entries reached the threshold but the guard rejected them all;
	// the returned [Match] describes the most similar one.
	ReasonGuardRejected Reason = "guard_rejected"
	// ReasonError: the query could not be embedded.
	ReasonError Reason = "error"
)

// Index is the semantic cache index. It is safe for concurrent use. Close it to stop
// following Redis.
type Index struct {
	cfg     Config
	emb     Embedder
	logger  *slog.Logger
	metrics *Metrics
	stream  string // Redis stream key; empty without Redis
	strict  bool   // the guard applies the wording rules

	mu    sync.RWMutex
	parts map[string]*partition
	byID  map[string]*entry
	fifo  []*entry // live and dead entries in insertion order, from head
	head  int
	live  int

	stop context.CancelFunc
	done chan struct{}
}

// entry is an [Entry] in the index.
type entry struct {
	Entry
	expires time.Time
	sig     *signature
	part    *partition
	slot    int32
	dead    bool
}

// New builds an index. With Redis it first loads the entries already in the stream, then
// follows the stream in a goroutine until [Index.Close]; ctx bounds the initial load only.
func New(ctx context.Context, cfg Config) (*Index, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	ix := &Index{
		cfg:     cfg,
		emb:     cfg.Embedder,
		logger:  cfg.Logger.With("component", "semantic_cache"),
		metrics: cfg.Metrics,
		strict:  cfg.GuardMode.For(cfg.Embedder) == GuardStrict,
		parts:   make(map[string]*partition),
		byID:    make(map[string]*entry),
	}
	if cfg.Redis == nil {
		return ix, nil
	}
	ix.stream = cfg.KeyPrefix + "stream:" + ix.emb.Name()
	last, err := ix.load(ctx)
	if err != nil {
		return nil, err
	}
	fctx, stop := context.WithCancel(context.Background())
	ix.stop, ix.done = stop, make(chan struct{})
	go ix.follow(fctx, last)
	return ix, nil
}

func (c *Config) applyDefaults() error {
	if c.Embedder == nil {
		h, err := NewHashEmbedder(0)
		if err != nil {
			return err
		}
		c.Embedder = h
	}
	if c.RedisTimeout <= 0 {
		c.RedisTimeout = 50 * time.Millisecond
	}
	if c.GuardMode < GuardAuto || c.GuardMode > GuardStrict {
		return fmt.Errorf("semantic: unknown guard mode %d", c.GuardMode)
	}
	if c.TTL < 0 || c.MaxEntries < 0 || c.Candidates < 0 || c.Threshold < 0 || c.Threshold > 1 {
		return errors.New("semantic: TTL, MaxEntries, Candidates must not be negative and " +
			"Threshold must be in [0, 1]")
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.Threshold == 0 {
		c.Threshold = DefaultThreshold
	}
	if c.Candidates == 0 {
		c.Candidates = DefaultCandidates
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	return nil
}

// Close stops following Redis. The index stays usable for local lookups and additions.
func (ix *Index) Close() error {
	if ix.stop != nil {
		ix.stop()
		<-ix.done
	}
	return nil
}

// Len returns the number of live entries.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.live
}

// Embed embeds one text with the index's embedder and records the time taken. Cancelling
// ctx abandons the embedding.
func (ix *Index) Embed(ctx context.Context, text string) ([]float32, error) {
	start := time.Now()
	vs, err := ix.emb.Embed(ctx, []string{text})
	ix.metrics.EmbedSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("embedding: %w", err)
	}
	if len(vs) != 1 {
		return nil, fmt.Errorf("embedding: got %d vectors for 1 text", len(vs))
	}
	return vs[0], nil
}

// Lookup embeds text and looks it up in partition; see [Index.LookupVector]. An embedding
// failure gives [ReasonError]. Cancelling ctx abandons the embedding.
func (ix *Index) Lookup(ctx context.Context, partition, text string,
	threshold float64) (Match, bool, Reason) {
	vec, err := ix.Embed(ctx, text)
	if err != nil {
		ix.metrics.Lookups.WithLabelValues(resultError).Inc()
		return Match{}, false, ReasonError
	}
	return ix.LookupVector(partition, text, vec, threshold)
}

// LookupVector finds the most similar live entry of partition whose similarity to vec is at
// least threshold (0 means the configured one) and which passes the guard against text. It
// tries up to Candidates entries, most similar first. vec must come from [Index.Embed].
func (ix *Index) LookupVector(partition, text string, vec []float32,
	threshold float64) (Match, bool, Reason) {
	start := time.Now()
	m, ok, reason := ix.lookup(partition, text, vec, threshold)
	ix.metrics.LookupSeconds.Observe(time.Since(start).Seconds())
	ix.metrics.Lookups.WithLabelValues(string(reason)).Inc()
	return m, ok, reason
}

func (ix *Index) lookup(partition, text string, vec []float32,
	threshold float64) (Match, bool, Reason) {
	if threshold <= 0 {
		threshold = ix.cfg.Threshold
	}
	ix.mu.RLock()
	p := ix.parts[partition]
	ix.mu.RUnlock()
	if p == nil || len(vec) != p.dim {
		return Match{}, false, ReasonMiss
	}
	cands := p.search(unit(vec), ix.cfg.Candidates, float32(threshold), ix.cfg.Now())
	if len(cands) == 0 {
		return Match{}, false, ReasonMiss
	}
	var query *signature
	if !ix.cfg.DisableGuard {
		query = newSignature(text)
	}
	var first Match
	for i, c := range cands {
		m := Match{EntryID: c.e.ID, AnswerKey: c.e.AnswerKey, Similarity: float64(c.sim)}
		if query != nil {
			m.Guard = compareSignatures(c.e.sig, query, ix.strict)
		}
		if m.Guard == "" {
			return m, true, ReasonHit
		}
		if i == 0 {
			first = m
		}
	}
	return first, false, ReasonGuardRejected
}

// Add embeds text and adds it to partition as the question answered under answerKey; see
// [Index.AddVector]. Cancelling ctx abandons the embedding and the Redis write.
func (ix *Index) Add(ctx context.Context, partition, text, answerKey string) (Entry, error) {
	vec, err := ix.Embed(ctx, text)
	if err != nil {
		return Entry{}, err
	}
	return ix.AddVector(ctx, partition, text, answerKey, vec)
}

// AddVector adds an entry with a vector from [Index.Embed] and, with Redis, publishes it to
// the other replicas. The entry is searchable here when AddVector returns, even if the
// Redis write failed (the error says so). The index keeps a unit-length copy of vec.
func (ix *Index) AddVector(ctx context.Context, partition, text, answerKey string,
	vec []float32) (Entry, error) {
	if d := ix.emb.Dim(); d != 0 && len(vec) != d || len(vec) == 0 {
		return Entry{}, fmt.Errorf("semantic: vector has %d dimensions, want %d",
			len(vec), ix.emb.Dim())
	}
	vec = unit(vec)
	e := Entry{ID: newID(), Partition: partition, Text: text, AnswerKey: answerKey,
		Vector: vec, Created: ix.cfg.Now(), TTL: ix.cfg.TTL}
	ix.insert(e)
	if ix.cfg.Redis == nil {
		return e, nil
	}
	if err := ix.publish(ctx, e); err != nil {
		return e, err
	}
	return e, nil
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// insert adds e unless an entry with its ID exists or it has expired, then evicts expired
// and excess entries. It reports whether e was added.
func (ix *Index) insert(e Entry) bool {
	now := ix.cfg.Now()
	en := &entry{Entry: e, expires: e.Created.Add(e.TTL), sig: newSignature(e.Text)}
	if !en.expires.After(now) {
		return false
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.byID[e.ID]; ok {
		return false
	}
	p := ix.parts[e.Partition]
	if p == nil {
		p = newPartition(len(e.Vector))
		ix.parts[e.Partition] = p
	}
	if p.dim != len(e.Vector) {
		return false
	}
	p.add(en)
	ix.byID[e.ID] = en
	ix.fifo = append(ix.fifo, en)
	ix.live++
	ix.evictLocked(now)
	ix.metrics.Entries.Set(float64(ix.live))
	return true
}

// evictLocked removes expired entries from the head of the insertion queue (at most
// sweepBatch) and the oldest entries beyond MaxEntries.
//
// TODO: entries with a longer TTL than the ones after them hold those back from eviction
// until they expire themselves; lookups skip expired entries, so only memory is affected.
func (ix *Index) evictLocked(now time.Time) {
	for n := 0; ix.head < len(ix.fifo); n++ {
		e := ix.fifo[ix.head]
		if ix.live <= ix.cfg.MaxEntries && (n >= sweepBatch || e.expires.After(now)) {
			break
		}
		ix.fifo[ix.head] = nil
		ix.head++
		ix.removeLocked(e)
	}
	if ix.head > 1024 && ix.head > len(ix.fifo)/2 {
		ix.fifo = append([]*entry(nil), ix.fifo[ix.head:]...)
		ix.head = 0
	}
}

func (ix *Index) removeLocked(e *entry) {
	delete(ix.byID, e.ID)
	ix.live--
	p := e.part
	p.remove(e)
	if p.live == 0 {
		delete(ix.parts, e.Partition)
	}
}

// unit returns a unit-length copy of v.
func unit(v []float32) []float32 {
	c := slices.Clone(v)
	normalize(c)
	return c
}
