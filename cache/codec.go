package cache

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/klauspost/compress/s2"
)

// Stored value format. A value is:
//
//	byte 0      format version, valueVersion
//	byte 1      flags: flagS2 when the payload is s2-compressed
//	bytes 2-9   stored-at time, Unix milliseconds, big-endian
//	bytes 10-17 expiry time, Unix milliseconds, big-endian
//	bytes 18-   the entry as chat.completion JSON
//
// A value with another version byte, unknown flags or a payload that does not decode is a miss,
// never an error shown to a client: an older or newer gateway may share the Redis.
const (
	valueVersion     = 1
	flagS2           = 1 << 0
	valueHeaderBytes = 18
	// maxDecodedBytes bounds the size a compressed value may claim.
	maxDecodedBytes = 64 << 20
)

// errBadValue marks a stored value that cannot be used.
var errBadValue = errors.New("unusable cache value")

// record is an entry with its times, as held in the layers.
type record struct {
	entry    *Entry
	storedAt time.Time
	expires  time.Time
	// size is the encoded JSON size, used to weigh the entry in memory.
	size int
}

// encodeValue serialises a record, compressing the payload when it is larger than
// compressAbove bytes.
func encodeValue(r *record, compressAbove int) ([]byte, int, error) {
	payload, err := json.Marshal(r.entry)
	if err != nil {
		return nil, 0, fmt.Errorf("encoding cache entry: %w", err)
	}
	var flags byte
	size := len(payload)
	if len(payload) > compressAbove {
		if c := s2.Encode(nil, payload); len(c) < len(payload) {
			payload, flags = c, flagS2
		}
	}
	b := make([]byte, valueHeaderBytes, valueHeaderBytes+len(payload))
	b[0] = valueVersion
	b[1] = flags
	binary.BigEndian.PutUint64(b[2:], uint64(r.storedAt.UnixMilli()))
	binary.BigEndian.PutUint64(b[10:], uint64(r.expires.UnixMilli()))
	return append(b, payload...), size, nil
}

// decodeValue parses a stored value. Every failure wraps errBadValue.
func decodeValue(b []byte) (*record, error) {
	if len(b) < valueHeaderBytes {
		return nil, fmt.Errorf("%w: %d bytes", errBadValue, len(b))
	}
	if b[0] != valueVersion {
		return nil, fmt.Errorf("%w: format version %d", errBadValue, b[0])
	}
	if b[1]&^flagS2 != 0 {
		return nil, fmt.Errorf("%w: flags %#x", errBadValue, b[1])
	}
	r := &record{
		storedAt: time.UnixMilli(int64(binary.BigEndian.Uint64(b[2:]))),
		expires:  time.UnixMilli(int64(binary.BigEndian.Uint64(b[10:]))),
	}
	payload := b[valueHeaderBytes:]
	if b[1]&flagS2 != 0 {
		n, err := s2.DecodedLen(payload)
		if err != nil || n > maxDecodedBytes {
			return nil, fmt.Errorf("%w: compressed payload", errBadValue)
		}
		if payload, err = s2.Decode(nil, payload); err != nil {
			return nil, fmt.Errorf("%w: %w", errBadValue, err)
		}
	}
	e := new(Entry)
	if err := json.Unmarshal(payload, e); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadValue, err)
	}
	r.entry, r.size = e, len(payload)
	return r, nil
}
