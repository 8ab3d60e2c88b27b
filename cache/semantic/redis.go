package semantic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replication through Redis
//
// Every replica appends its new entries to one Redis stream per embedder,
// <prefix>stream:<embedder name>, and reads the stream from where it last stopped, adding
// what others appended. A starting replica reads the whole stream first. The stream is
// trimmed by age with XADD MINID (stream IDs start with a millisecond time), so it holds
// about one TTL of entries, and its key expires one TTL after the last addition. Each stream
// entry holds the fields below; the vector is float32 little-endian, 4 bytes per dimension.
// A replica skips its own entries (same ID) and entries that have expired.
const (
	fieldID        = "id"
	fieldPartition = "p"
	fieldText      = "t"
	fieldAnswerKey = "k"
	fieldVector    = "v"
	fieldCreated   = "c"   // Unix milliseconds
	fieldTTL       = "ttl" // milliseconds
)

// Stream reading parameters.
const (
	loadPage     = 1000
	followCount  = 512
	followBlock  = 500 * time.Millisecond // also bounds how long Close waits
	followBackof = time.Second
)

// publish appends e to the stream, waiting at most RedisTimeout: a Redis that is down
// costs a request no more than that.
func (ix *Index) publish(ctx context.Context, e Entry) error {
	ctx, cancel := context.WithTimeout(ctx, ix.cfg.RedisTimeout)
	defer cancel()
	minID := e.Created.Add(-ix.cfg.TTL).UnixMilli()
	pipe := ix.cfg.Redis.Pipeline()
	pipe.XAdd(ctx, &redis.XAddArgs{
		Stream: ix.stream,
		MinID:  strconv.FormatInt(max(minID, 0), 10),
		Approx: true,
		Values: []any{
			fieldID, e.ID,
			fieldPartition, e.Partition,
			fieldText, e.Text,
			fieldAnswerKey, e.AnswerKey,
			fieldVector, encodeVector(e.Vector),
			fieldCreated, e.Created.UnixMilli(),
			fieldTTL, e.TTL.Milliseconds(),
		},
	})
	pipe.PExpire(ctx, ix.stream, ix.cfg.TTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("publishing semantic entry: %w", err)
	}
	return nil
}

// load reads the whole stream into the index and returns the last stream ID read ("0-0"
// for an empty stream).
func (ix *Index) load(ctx context.Context) (string, error) {
	last, start, n := "0-0", "-", 0
	for {
		msgs, err := ix.cfg.Redis.XRangeN(ctx, ix.stream, start, "+", loadPage).Result()
		if err != nil {
			return "", fmt.Errorf("loading semantic entries: %w", err)
		}
		for _, m := range msgs {
			if ix.apply(m) {
				n++
			}
			last = m.ID
		}
		if len(msgs) < loadPage {
			break
		}
		start = "(" + last
	}
	ix.logger.Info("semantic entries loaded", "entries", n, "stream", ix.stream)
	return last, nil
}

// follow reads new stream entries after last until ctx is done.
func (ix *Index) follow(ctx context.Context, last string) {
	defer close(ix.done)
	failing := false
	for ctx.Err() == nil {
		res, err := ix.cfg.Redis.XRead(ctx, &redis.XReadArgs{
			Streams: []string{ix.stream, last},
			Count:   followCount,
			Block:   followBlock,
		}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if !failing {
				ix.logger.Warn("reading semantic stream", "err", err)
				failing = true
			}
			sleep(ctx, followBackof)
			continue
		}
		if failing {
			ix.logger.Info("reading semantic stream again")
			failing = false
		}
		for _, s := range res {
			for _, m := range s.Messages {
				ix.apply(m)
				last = m.ID
			}
		}
	}
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// apply adds a stream entry to the index and reports whether it was new.
func (ix *Index) apply(m redis.XMessage) bool {
	e, err := decodeEntry(m.Values)
	if err == nil && ix.emb.Dim() != 0 && len(e.Vector) != ix.emb.Dim() {
		err = fmt.Errorf("vector has %d dimensions, want %d", len(e.Vector), ix.emb.Dim())
	}
	if err != nil {
		ix.logger.LogAttrs(context.Background(), slog.LevelDebug, "skipping semantic entry",
			slog.String("stream_id", m.ID), slog.Any("err", err))
		return false
	}
	return ix.insert(e)
}

func decodeEntry(v map[string]any) (Entry, error) {
	str := func(k string) string {
		s, _ := v[k].(string)
		return s
	}
	num := func(k string) (int64, error) { return strconv.ParseInt(str(k), 10, 64) }
	e := Entry{ID: str(fieldID), Partition: str(fieldPartition), Text: str(fieldText),
		AnswerKey: str(fieldAnswerKey)}
	created, err1 := num(fieldCreated)
	ttl, err2 := num(fieldTTL)
	vec, err3 := decodeVector(str(fieldVector))
	if err := errors.Join(err1, err2, err3); err != nil || e.ID == "" || ttl <= 0 {
		return Entry{}, fmt.Errorf("malformed entry: %w", err)
	}
	e.Created, e.TTL, e.Vector = time.UnixMilli(created), time.Duration(ttl)*time.Millisecond, vec
	return e, nil
}

func encodeVector(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

func decodeVector(s string) ([]float32, error) {
	if len(s) == 0 || len(s)%4 != 0 {
		return nil, fmt.Errorf("vector of %d bytes", len(s))
	}
	v := make([]float32, len(s)/4)
	for i := range v {
		j := 4 * i
		bits := uint32(s[j]) | uint32(s[j+1])<<8 | uint32(s[j+2])<<16 | uint32(s[j+3])<<24
		v[i] = math.Float32frombits(bits)
	}
	return v, nil
}
