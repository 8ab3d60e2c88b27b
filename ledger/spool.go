package ledger

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// Spool is an append-only file of usage rows not yet known to be committed to the store.
// Each record is framed as a 4-byte big-endian payload length, a 4-byte CRC-32C of the
// payload, and the payload (one JSON-encoded [Row]). A record cut short by a crash, or one
// whose checksum does not match, ends the readable part: it and anything after it are
// dropped when the spool is opened. Every append is fsync'd before it returns. It is safe for
// concurrent use.
type Spool struct {
	mu   sync.Mutex
	f    *os.File
	size int64
	path string
}

// Spool framing limits.
const (
	spoolHeaderLen     = 8
	maxSpoolRecordSize = 1 << 20 // a larger length field is taken as corruption
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// OpenSpool opens or creates the spool at path (creating its folder), dropping a torn or
// corrupt tail. It returns the number of bytes dropped.
func OpenSpool(path string) (*Spool, int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, 0, fmt.Errorf("creating spool folder: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("opening spool: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("opening spool: %w", err)
	}
	good, err := scanSpool(io.NewSectionReader(f, 0, st.Size()), nil)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	dropped := st.Size() - good
	if dropped > 0 {
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("dropping torn spool tail: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("syncing spool: %w", err)
		}
	}
	return &Spool{f: f, size: good, path: path}, dropped, nil
}

// scanSpool reads whole, valid records from r, passing each row to fn when fn is not nil, and
// returns the offset just past the last good record. It stops at the first torn or corrupt
// record; only a read error or fn's error is returned.
func scanSpool(r io.Reader, fn func(Row) error) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	var hdr [spoolHeaderLen]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return off, nil
			}
			return off, fmt.Errorf("reading spool: %w", err)
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if n == 0 || n > maxSpoolRecordSize {
			return off, nil
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return off, nil
			}
			return off, fmt.Errorf("reading spool: %w", err)
		}
		if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
			return off, nil
		}
		var row Row
		if err := json.Unmarshal(payload, &row); err != nil {
			return off, nil // a valid checksum over bad JSON: treat as corrupt too
		}
		if fn != nil {
			if err := fn(row); err != nil {
				return off, err
			}
		}
		off += spoolHeaderLen + int64(n)
	}
}

// Append writes rows as one write and fsyncs, returning the offsets where they start and
// end. On error nothing is counted as appended; a partly written record is dropped as a torn
// tail on the next open.
func (s *Spool) Append(rows []Row) (start, end int64, err error) {
	if len(rows) == 0 {
		return s.Size(), s.Size(), nil
	}
	var buf []byte
	for _, r := range rows {
		payload, err := json.Marshal(r)
		if err != nil {
			return 0, 0, fmt.Errorf("encoding row: %w", err)
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(payload)))
		buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(payload, crcTable))
		buf = append(buf, payload...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.f.WriteAt(buf, s.size); err != nil {
		return 0, 0, fmt.Errorf("appending to spool: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return 0, 0, fmt.Errorf("syncing spool: %w", err)
	}
	start = s.size
	s.size += int64(len(buf))
	return start, s.size, nil
}

// Size returns the bytes held.
func (s *Spool) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Replay passes every row in the spool's first end bytes to fn in order, stopping at fn's
// first error. Use [Spool.Size] for end, then [Spool.Release] once the rows are committed.
func (s *Spool) Replay(end int64, fn func(Row) error) error {
	_, err := scanSpool(io.NewSectionReader(s.f, 0, end), fn)
	return err
}

// Release drops the first end bytes, which the caller has committed. Bytes appended after end
// are kept: the file is rewritten with them alone, through a temporary file renamed into
// place, so a crash leaves either the old spool or the new one.
func (s *Spool) Release(end int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if end >= s.size {
		if err := s.f.Truncate(0); err != nil {
			return fmt.Errorf("truncating spool: %w", err)
		}
		s.size = 0
		return s.f.Sync()
	}
	tmp := s.path + ".tmp"
	t, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("compacting spool: %w", err)
	}
	n, err := io.Copy(t, io.NewSectionReader(s.f, end, s.size-end))
	if err == nil {
		err = t.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		t.Close()
		os.Remove(tmp)
		return fmt.Errorf("compacting spool: %w", err)
	}
	s.f.Close()
	s.f, s.size = t, n
	return syncDir(filepath.Dir(s.path))
}

// Close closes the file; rows in it stay for the next open.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
