package ledger

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkWriterPostgres measures usage rows per second through the Writer into PostgreSQL
// (write-ahead spool, COPY batches of 500), including the final flush.
func BenchmarkWriterPostgres(b *testing.B) {
	ctx := testContext(b)
	pg, err := OpenPostgres(ctx, PostgresOptions{DSN: postgresURL(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer pg.Close()
	sp, _, err := OpenSpool(filepath.Join(b.TempDir(), "spool"))
	if err != nil {
		b.Fatal(err)
	}
	// The queue holds every row, so this measures the batch pipeline (spool write-ahead,
	// COPY, release) rather than the per-row fsync of queue overflow.
	w := NewWriter(pg, sp, WriterOptions{MaxRows: 500, MaxDelay: 50 * time.Millisecond,
		QueueSize: b.N + 1})
	at := time.Now()
	b.ResetTimer()
	// The flush is inside the timed region, so b.N counts rows committed, not just queued.
	for i := 0; i < b.N; i++ {
		if err := w.Record(usageRow(fmt.Sprint(i), "bench", at, 1)); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkWriteUsageCopy measures one store call writing a 500-row batch with COPY.
func BenchmarkWriteUsageCopy(b *testing.B) {
	ctx := testContext(b)
	pg, err := OpenPostgres(ctx, PostgresOptions{DSN: postgresURL(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer pg.Close()
	at := time.Now()
	batch := make([]Row, 500)
	n := 0
	for b.Loop() {
		for j := range batch {
			batch[j] = usageRow(fmt.Sprint(n), "bench", at, 1)
			n++
		}
		if _, err := pg.WriteUsage(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkReserve measures a Redis budget reservation plus its settlement, reporting the
// p50 and p99 latency of the reservation.
func BenchmarkReserve(b *testing.B) {
	ctx := testContext(b)
	st, err := OpenSQLite(ctx, filepath.Join(b.TempDir(), "l.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	bud, err := NewBudget(BudgetOptions{Redis: redisClient(b), Store: st, VNDPerUSD: 25_000})
	if err != nil {
		b.Fatal(err)
	}
	p := Principal{UserID: "bench"}
	lat := make([]time.Duration, 0, 1<<16)
	for b.Loop() {
		t0 := time.Now()
		r, err := bud.Reserve(ctx, p, 1<<50, 1000)
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		if err := bud.Settle(ctx, r, 900); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
