package ledger

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phochat/phogate/test/testenv"
)

// TestWriterPostgresOutage writes 10,000 rows through the Writer while PostgreSQL becomes
// unreachable and comes back; the table ends with every row exactly once.
func TestWriterPostgresOutage(t *testing.T) {
	ctx := testContext(t)
	dsn, stop, restart := testenv.StartPostgres(t)
	pg, err := OpenPostgres(ctx, PostgresOptions{DSN: dsn})
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	defer pg.Close()
	sp, _, err := OpenSpool(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(nil)
	logs := &syncBuffer{}
	w := NewWriter(pg, sp, WriterOptions{Logger: slog.New(slog.NewTextHandler(logs, nil)),
		MaxRows: 500, MaxDelay: 5 * time.Millisecond,
		QueueSize: 1000, WriteTimeout: 2 * time.Second, RetryInitial: 5 * time.Millisecond,
		RetryMax: 50 * time.Millisecond, Metrics: m})

	const total = 10_000
	at := time.Now()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < total; i += 4 {
				if i == total/2 {
					stop() // PostgreSQL goes away mid-stream
				}
				if err := w.Record(usageRow(fmt.Sprint(i), "outage", at, USD(i))); err != nil {
					t.Errorf("Record(%d): %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	// Wait until the writer has spooled rows it could not commit, then bring PostgreSQL back.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for sp.Size() == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("rows were never spooled during the outage")
		case <-tick.C:
		}
	}
	restart()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	for _, msg := range []string{"usage store unavailable", "usage store available again"} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("writer never logged %q; the outage was not seen", msg)
		}
	}
	got, err := pg.MonthlyUsage(ctx, "outage", at)
	if err != nil {
		t.Fatal(err)
	}
	wantCost := USD(total * (total - 1) / 2)
	if got.Requests != total || got.Cost != wantCost {
		t.Errorf("after the outage: %d rows costing %d, want %d rows costing %d",
			got.Requests, got.Cost, total, wantCost)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
