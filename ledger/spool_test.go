package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func spoolRows(sp *Spool) ([]string, error) {
	var ids []string
	err := sp.Replay(sp.Size(), func(r Row) error {
		ids = append(ids, r.RequestID)
		return nil
	})
	return ids, err
}

func TestSpoolTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool")
	sp, _, err := OpenSpool(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, _, err := sp.Append([]Row{usageRow("a", "u", at, 1), usageRow("b", "u", at, 2)}); err != nil {
		t.Fatal(err)
	}
	good := sp.Size()
	if _, _, err := sp.Append([]Row{usageRow("c", "u", at, 3)}); err != nil {
		t.Fatal(err)
	}
	full := sp.Size()
	sp.Close()

	tests := []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"cut inside header", func(b []byte) []byte { return b[:good+3] }},
		{"cut inside payload", func(b []byte) []byte { return b[:full-5] }},
		{"flipped payload byte", func(b []byte) []byte {
			b = slices.Clone(b)
			b[full-2] ^= 0xff
			return b
		}},
		{"garbage length", func(b []byte) []byte {
			b = slices.Clone(b)
			b[good] = 0xff
			return b
		}},
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "spool")
			if err := os.WriteFile(p, tt.damage(orig), 0o600); err != nil {
				t.Fatal(err)
			}
			sp, dropped, err := OpenSpool(p)
			if err != nil {
				t.Fatalf("OpenSpool: %v", err)
			}
			defer sp.Close()
			if dropped == 0 || sp.Size() != good {
				t.Errorf("OpenSpool dropped %d bytes leaving %d, want %d left", dropped,
					sp.Size(), good)
			}
			ids, err := spoolRows(sp)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"a", "b"}, ids); diff != "" {
				t.Errorf("rows after torn tail (-want +got):\n%s", diff)
			}
			// Appends after the repair are readable.
			if _, _, err := sp.Append([]Row{usageRow("d", "u", at, 4)}); err != nil {
				t.Fatal(err)
			}
			ids, _ = spoolRows(sp)
			if diff := cmp.Diff([]string{"a", "b", "d"}, ids); diff != "" {
				t.Errorf("rows after append (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSpoolReleaseKeepsLaterAppends(t *testing.T) {
	sp, _, err := OpenSpool(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	at := time.Now()
	if _, _, err := sp.Append([]Row{usageRow("a", "u", at, 1)}); err != nil {
		t.Fatal(err)
	}
	end := sp.Size()
	if _, _, err := sp.Append([]Row{usageRow("b", "u", at, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := sp.Release(end); err != nil {
		t.Fatalf("Release: %v", err)
	}
	ids, err := spoolRows(sp)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"b"}, ids); diff != "" {
		t.Errorf("rows after partial release (-want +got):\n%s", diff)
	}
	if err := sp.Release(sp.Size()); err != nil || sp.Size() != 0 {
		t.Errorf("Release(all) = %v leaving %d bytes, want nil and 0", err, sp.Size())
	}
}

// flakyStore is a [Store] whose WriteUsage fails while down is set, optionally after
// committing (a lost acknowledgement), and counts what it holds.
type flakyStore struct {
	Store
	mu         sync.Mutex
	down       bool
	commitThen bool // commit, then report failure
	rows       map[string]Row
	attempts   int
	committed  chan struct{}
	tried      chan struct{}
}

func newFlakyStore() *flakyStore {
	return &flakyStore{rows: map[string]Row{}, committed: make(chan struct{}, 1000),
		tried: make(chan struct{}, 1000)}
}

func (f *flakyStore) WriteUsage(_ context.Context, rows []Row) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	select {
	case f.tried <- struct{}{}:
	default:
	}
	if f.down && !f.commitThen {
		return 0, errors.New("store down")
	}
	var n int64
	for _, r := range rows {
		if _, ok := f.rows[r.RequestID]; !ok {
			f.rows[r.RequestID] = r
			n++
		}
	}
	if f.commitThen {
		return 0, errors.New("connection lost after commit")
	}
	select {
	case f.committed <- struct{}{}:
	default:
	}
	return n, nil
}

func (f *flakyStore) set(down, commitThen bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down, f.commitThen = down, commitThen
}

func (f *flakyStore) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rows)
}

func fastWriterOptions() WriterOptions {
	return WriterOptions{MaxRows: 50, MaxDelay: 5 * time.Millisecond, QueueSize: 100,
		RetryInitial: time.Millisecond, RetryMax: 20 * time.Millisecond}
}

func TestWriterReplaysExactlyOnce(t *testing.T) {
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "spool")
	st := newFlakyStore()
	st.set(true, true) // every write commits but reports failure, so rows are re-sent
	sp, _, err := OpenSpool(path)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(st, sp, fastWriterOptions())
	for i := range 500 {
		if err := w.Record(usageRow(fmt.Sprint(i), "u", time.Now(), 1)); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	// Once a batch has been committed with its acknowledgement lost, the store recovers;
	// Close waits for the spool to be written.
	<-st.tried
	st.set(false, false)
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := st.count(); got != 500 {
		t.Errorf("store holds %d rows, want 500", got)
	}
	sp, _, err = OpenSpool(path)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if sp.Size() != 0 {
		t.Errorf("spool holds %d bytes after a clean close, want 0", sp.Size())
	}
}

func TestWriterCrashKeepsSpool(t *testing.T) {
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "spool")
	st := newFlakyStore()
	st.set(true, false)
	sp, _, err := OpenSpool(path)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(st, sp, fastWriterOptions())
	for i := range 120 {
		if err := w.Record(usageRow(fmt.Sprint(i), "u", time.Now(), 1)); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	// Close gives up while the store is down: the rows stay in the spool, as after a crash.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := w.Close(short); err == nil {
		t.Fatalf("Close with the store down succeeded, want an error naming the spool")
	}
	if err := w.Record(usageRow("late", "u", time.Now(), 1)); !errors.Is(err, ErrWriterClosed) {
		t.Errorf("Record after Close = %v, want ErrWriterClosed", err)
	}

	// A new writer on the same spool, with the store back, writes every row once.
	st.set(false, false)
	sp, _, err = OpenSpool(path)
	if err != nil {
		t.Fatal(err)
	}
	if sp.Size() == 0 {
		t.Fatalf("spool is empty after a failed close")
	}
	w = NewWriter(st, sp, fastWriterOptions())
	<-st.committed
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := st.count(); got != 120 {
		t.Errorf("store holds %d rows, want 120", got)
	}
}

func TestWriterQueueOverflowGoesToSpool(t *testing.T) {
	ctx := testContext(t)
	st := newFlakyStore()
	st.set(true, false)
	sp, _, err := OpenSpool(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	o := fastWriterOptions()
	o.QueueSize = 1
	w := NewWriter(st, sp, o)
	for i := range 300 {
		if err := w.Record(usageRow(fmt.Sprint(i), "u", time.Now(), 1)); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	st.set(false, false)
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := st.count(); got != 300 {
		t.Errorf("store holds %d rows, want 300", got)
	}
}
