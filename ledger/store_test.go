package ledger

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// storeCase opens a fresh store, and a second one on the same database, and reads the stored
// key hashes directly.
type storeCase struct {
	name string
	open func(t *testing.T) (open func(ctx context.Context) (Store, error), keys func() [][]byte)
}

var storeCases = []storeCase{
	{"postgres", func(t *testing.T) (func(context.Context) (Store, error), func() [][]byte) {
		dsn := postgresURL(t)
		open := func(ctx context.Context) (Store, error) {
			return OpenPostgres(ctx, PostgresOptions{DSN: dsn})
		}
		keys := func() [][]byte {
			ctx := testContext(t)
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			rows, _ := c.Query(ctx, `SELECT key_sha256 FROM api_keys ORDER BY 1`)
			out, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		return open, keys
	}},
	{"sqlite", func(t *testing.T) (func(context.Context) (Store, error), func() [][]byte) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		open := func(ctx context.Context) (Store, error) { return OpenSQLite(ctx, path) }
		keys := func() [][]byte {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			rows, err := db.Query(`SELECT key_sha256 FROM api_keys ORDER BY 1`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out [][]byte
			for rows.Next() {
				var b []byte
				if err := rows.Scan(&b); err != nil {
					t.Fatal(err)
				}
				out = append(out, b)
			}
			return out
		}
		return open, keys
	}},
}

// openStore opens a store of case sc and closes it after the test.
func openStore(t *testing.T, sc storeCase) (Store, func() [][]byte, func(context.Context) (Store, error)) {
	t.Helper()
	open, keys := sc.open(t)
	st, err := open(testContext(t))
	if err != nil {
		t.Fatalf("opening %s store: %v", sc.name, err)
	}
	t.Cleanup(func() { st.Close() })
	return st, keys, open
}

func TestStoreMigrationsIdempotent(t *testing.T) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			st, _, open := openStore(t, sc)
			ctx := testContext(t)
			if err := st.PutUser(ctx, User{ID: "u1", Tier: "free"}); err != nil {
				t.Fatalf("PutUser: %v", err)
			}
			// Several replicas starting at once each migrate; none fails, nothing is lost.
			var wg sync.WaitGroup
			errs := make([]error, 3)
			for i := range errs {
				wg.Go(func() {
					s, err := open(ctx)
					if err == nil {
						err = s.Close()
					}
					errs[i] = err
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("reopening: %v", err)
			}
			if _, err := st.User(ctx, "u1"); err != nil {
				t.Errorf("User after re-migration: %v", err)
			}
		})
	}
}

func TestStoreKeysHashed(t *testing.T) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			st, keys, _ := openStore(t, sc)
			ctx := testContext(t)
			const key = "sk-test-secret-key"
			if err := st.PutKey(ctx, HashKey(key), "alice", "plus"); err != nil {
				t.Fatalf("PutKey: %v", err)
			}
			got, err := st.LookupKey(ctx, HashKey(key))
			if err != nil {
				t.Fatalf("LookupKey: %v", err)
			}
			if diff := cmp.Diff(Principal{UserID: "alice", Tier: "plus"}, got); diff != "" {
				t.Errorf("LookupKey (-want +got):\n%s", diff)
			}
			if _, err := st.LookupKey(ctx, HashKey("sk-other")); !errors.Is(err, ErrNotFound) {
				t.Errorf("LookupKey(unknown) error = %v, want ErrNotFound", err)
			}
			sum := sha256.Sum256([]byte(key))
			if diff := cmp.Diff([][]byte{sum[:]}, keys()); diff != "" {
				t.Errorf("stored key column holds something other than the hash (-want +got):\n%s",
					diff)
			}
		})
	}
}

func TestStoreUsers(t *testing.T) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			st, _, _ := openStore(t, sc)
			ctx := testContext(t)
			budget := int64(50_000)
			want := User{ID: "bob", Tier: "pro", MonthlyBudgetVND: &budget}
			if err := st.PutTiers(ctx, []Tier{{Name: "pro", MonthlyBudgetVND: 1}}); err != nil {
				t.Fatalf("PutTiers: %v", err)
			}
			if err := st.PutUser(ctx, want); err != nil {
				t.Fatalf("PutUser: %v", err)
			}
			got, err := st.User(ctx, "bob")
			if err != nil {
				t.Fatalf("User: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("User (-want +got):\n%s", diff)
			}
			if _, err := st.User(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
				t.Errorf("User(unknown) error = %v, want ErrNotFound", err)
			}
		})
	}
}

func usageRow(id, user string, at time.Time, cost USD) Row {
	return Row{RequestID: id, UserID: user, Tier: "free", RequestedModel: "gpt-4o",
		ServedModel: "gpt-4o-mini", Provider: "fake", Cost: cost, Status: 200,
		Usage:   Usage{PromptTokens: 10, CompletionTokens: 20, CachedPromptTokens: 5},
		Latency: 1500 * time.Millisecond, Time: at}
}

func TestStoreUsageIdempotent(t *testing.T) {
	month := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			st, _, _ := openStore(t, sc)
			ctx := testContext(t)
			first := []Row{
				usageRow("r1", "carol", month, 100),
				usageRow("r2", "carol", month.AddDate(0, 0, 10), 250),
				usageRow("r3", "carol", month.AddDate(0, 1, 0), 999), // next month
				usageRow("r4", "dave", month, 7),
			}
			n, err := st.WriteUsage(ctx, first)
			if err != nil || n != 4 {
				t.Fatalf("WriteUsage(first) = %d, %v, want 4, nil", n, err)
			}
			// The same batch again with one new row and an in-batch duplicate.
			again := append(first, usageRow("r5", "carol", month, 1), usageRow("r5", "carol", month, 1))
			n, err = st.WriteUsage(ctx, again)
			if err != nil || n != 1 {
				t.Fatalf("WriteUsage(again) = %d, %v, want 1, nil", n, err)
			}
			got, err := st.MonthlyUsage(ctx, "carol", month)
			if err != nil {
				t.Fatalf("MonthlyUsage: %v", err)
			}
			want := MonthlyUsage{Requests: 3, Cost: 351,
				Usage: Usage{PromptTokens: 30, CompletionTokens: 60, CachedPromptTokens: 15}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("MonthlyUsage (-want +got):\n%s", diff)
			}
			if _, err := st.WriteUsage(ctx, []Row{{}}); err == nil {
				t.Errorf("WriteUsage(row without request ID) succeeded, want error")
			}
		})
	}
}

func TestStoreBudget(t *testing.T) {
	now := time.Date(2026, 5, 2, 8, 0, 0, 0, time.UTC)
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			st, _, _ := openStore(t, sc)
			ctx := testContext(t)
			if _, err := st.WriteUsage(ctx, []Row{usageRow("old", "erin", now, 200)}); err != nil {
				t.Fatal(err)
			}
			res := func(id string, amount USD, at time.Time) (USD, error) {
				return st.ReserveBudget(ctx, BudgetReservation{ID: id, User: "erin",
					Month: "2026-05", Amount: amount, Budget: 1000, Now: at,
					Expires: at.Add(time.Minute)})
			}
			// 200 already spent this month (loaded from usage rows) + 500 fits in 1000.
			if left, err := res("a", 500, now); err != nil || left != 300 {
				t.Fatalf("Reserve(a) = %d, %v, want 300, nil", left, err)
			}
			_, err := res("b", 400, now)
			var be *BudgetExceededError
			if !errors.As(err, &be) || be.Remaining != 300 {
				t.Fatalf("Reserve(b) error = %v, want BudgetExceededError with 300 left", err)
			}
			if err := st.SettleBudget(ctx, "a", "erin", "2026-05", 100); err != nil {
				t.Fatalf("Settle(a): %v", err)
			}
			if left, err := res("c", 700, now); err != nil || left != 0 {
				t.Fatalf("Reserve(c) after settle = %d, %v, want 0, nil", left, err)
			}
			// c expires unsettled: a minute later its 700 is free again.
			later := now.Add(2 * time.Minute)
			if left, err := res("d", 600, later); err != nil || left != 100 {
				t.Fatalf("Reserve(d) after expiry = %d, %v, want 100, nil", left, err)
			}
			// Settling the expired reservation charges its cost alone.
			if err := st.SettleBudget(ctx, "c", "erin", "2026-05", 50); err != nil {
				t.Fatalf("Settle(c): %v", err)
			}
			if _, err := res("e", 51, later); !errors.As(err, &be) || be.Remaining != 50 {
				t.Fatalf("Reserve(e) error = %v, want BudgetExceededError with 50 left", err)
			}
		})
	}
}

func TestStoreBudgetConcurrent(t *testing.T) {
	now := time.Date(2026, 5, 2, 8, 0, 0, 0, time.UTC)
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			st, _, _ := openStore(t, sc)
			ctx := testContext(t)
			var mu sync.Mutex
			var wg sync.WaitGroup
			ok := 0
			for i := range 50 {
				wg.Go(func() {
					_, err := st.ReserveBudget(ctx, BudgetReservation{ID: fmt.Sprint(i),
						User: "frank", Month: "2026-05", Amount: 10, Budget: 205, Now: now,
						Expires: now.Add(time.Minute)})
					var be *BudgetExceededError
					if err != nil && !errors.As(err, &be) {
						t.Errorf("Reserve: %v", err)
					}
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						ok++
					}
				})
			}
			wg.Wait()
			if ok != 20 {
				t.Errorf("%d reservations of 10 succeeded against a budget of 205, want 20", ok)
			}
		})
	}
}

func TestPoolCollector(t *testing.T) {
	pg, err := OpenPostgres(testContext(t), PostgresOptions{DSN: postgresURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	// 3 pools × (3 connection states + max + acquires + empty acquires + wait).
	if n := testutil.CollectAndCount(NewPoolCollector(pg.Pools())); n != 21 {
		t.Errorf("pool collector gave %d metrics, want 21", n)
	}
	problems, err := testutil.CollectAndLint(NewPoolCollector(pg.Pools()))
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestPostgresUsageByModel(t *testing.T) {
	ctx := testContext(t)
	pg, err := OpenPostgres(ctx, PostgresOptions{DSN: postgresURL(t), AnalyticsConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	at := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	rows := []Row{usageRow("1", "a", at, 5), usageRow("2", "b", at, 7), usageRow("3", "a", at, 1)}
	rows[2].ServedModel = "gpt-4o"
	if _, err := pg.WriteUsage(ctx, rows); err != nil {
		t.Fatal(err)
	}
	got, err := pg.UsageByModel(ctx, at, at.AddDate(0, 1, 0))
	if err != nil {
		t.Fatalf("UsageByModel: %v", err)
	}
	u := Usage{PromptTokens: 10, CompletionTokens: 20, CachedPromptTokens: 5}
	double := Usage{PromptTokens: 20, CompletionTokens: 40, CachedPromptTokens: 10}
	want := []ModelUsage{{"gpt-4o-mini", 2, double, 12}, {"gpt-4o", 1, u, 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UsageByModel (-want +got):\n%s", diff)
	}
}
