package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// SQLite is the embedded [Store]: one SQLite file, written through a single connection. It
// suits a single gateway replica; budgets it arbitrates hold only within that process's
// host, since the file cannot be shared across machines. It is safe for concurrent use.
type SQLite struct {
	db *sql.DB
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens or creates the database file at path (creating its folder) and applies
// pending migrations. ctx bounds opening and migrating only.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("creating data folder: %w", err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	// One connection: SQLite has one writer anyway, and this keeps every transaction's
	// check-then-update atomic without busy retries.
	db.SetMaxOpenConns(1)
	s := &SQLite{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *SQLite) migrate(ctx context.Context) error {
	steps, err := migrations("sqlite")
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		return applyMigrations(schemaTx{
			exec: func(q string, args ...any) error {
				_, err := tx.ExecContext(ctx, q, args...)
				return err
			},
			queryInt: func(q string) (int, error) {
				var n int
				err := tx.QueryRowContext(ctx, q).Scan(&n)
				return n, err
			},
			createTable: `CREATE TABLE IF NOT EXISTS ledger_schema_migrations (
			version integer PRIMARY KEY, applied_at integer NOT NULL DEFAULT (unixepoch()))`,
			record: `INSERT INTO ledger_schema_migrations (version) VALUES (?)`,
		}, steps)
	})
	if err != nil {
		return fmt.Errorf("migrating ledger schema: %w", err)
	}
	return nil
}

// inTx runs fn in a transaction, committing when it returns nil.
func (s *SQLite) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error from fn is the one that matters
		return err
	}
	return tx.Commit()
}

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }

// LookupKey implements [Store].
func (s *SQLite) LookupKey(ctx context.Context, h KeyHash) (Principal, error) {
	var pr Principal
	err := s.db.QueryRowContext(ctx, `SELECT u.id, u.tier, u.monthly_budget_vnd
		FROM api_keys k JOIN users u ON u.id = k.user_id
		WHERE k.key_sha256 = ? AND k.revoked_at IS NULL`, h[:]).
		Scan(&pr.UserID, &pr.Tier, &pr.MonthlyBudgetVND)
	if errors.Is(err, sql.ErrNoRows) {
		return Principal{}, ErrNotFound
	}
	if err != nil {
		return Principal{}, fmt.Errorf("looking up key: %w", err)
	}
	return pr, nil
}

// PutKey implements [Store].
func (s *SQLite) PutKey(ctx context.Context, h KeyHash, user, tier string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO users (id, tier) VALUES (?, ?)
			ON CONFLICT (id) DO NOTHING`, user, tier)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO api_keys (key_sha256, user_id) VALUES (?, ?)
			ON CONFLICT (key_sha256) DO UPDATE SET user_id = excluded.user_id, revoked_at = NULL`,
			h[:], user)
		return err
	})
	if err != nil {
		return fmt.Errorf("storing key: %w", err)
	}
	return nil
}

// PutUser implements [Store].
func (s *SQLite) PutUser(ctx context.Context, u User) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO users (id, tier, monthly_budget_vnd)
		VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE
		SET tier = excluded.tier, monthly_budget_vnd = excluded.monthly_budget_vnd`,
		u.ID, u.Tier, u.MonthlyBudgetVND)
	if err != nil {
		return fmt.Errorf("storing user: %w", err)
	}
	return nil
}

// User implements [Store].
func (s *SQLite) User(ctx context.Context, id string) (User, error) {
	u := User{ID: id}
	err := s.db.QueryRowContext(ctx, `SELECT tier, monthly_budget_vnd FROM users WHERE id = ?`,
		id).Scan(&u.Tier, &u.MonthlyBudgetVND)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("reading user: %w", err)
	}
	return u, nil
}

// PutTiers implements [Store].
func (s *SQLite) PutTiers(ctx context.Context, tiers []Tier) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, t := range tiers {
			_, err := tx.ExecContext(ctx, `INSERT INTO tiers (name, monthly_budget_vnd)
				VALUES (?, ?) ON CONFLICT (name) DO UPDATE
				SET monthly_budget_vnd = excluded.monthly_budget_vnd, updated_at = unixepoch()`,
				t.Name, t.MonthlyBudgetVND)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing tiers: %w", err)
	}
	return nil
}

// WriteUsage implements [Store].
func (s *SQLite) WriteUsage(ctx context.Context, rows []Row) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	if err := validateRows(rows); err != nil {
		return 0, err
	}
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO usage (request_id, user_id, tier,
			requested_model, served_model, provider, prompt_tokens, completion_tokens,
			cached_tokens, cost_nano, cache_layer, latency_ms, status, estimated, ts)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (request_id) DO NOTHING`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, r := range rows {
			v := usageValues(r)
			v[len(v)-1] = r.Time.UnixMicro()
			res, err := st.ExecContext(ctx, v...)
			if err != nil {
				return err
			}
			k, _ := res.RowsAffected() // the driver always reports it
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("writing usage: %w", err)
	}
	return n, nil
}

// MonthlyUsage implements [Store], in one statement.
func (s *SQLite) MonthlyUsage(ctx context.Context, user string, t time.Time) (MonthlyUsage, error) {
	_, start, end := monthOf(t)
	var m MonthlyUsage
	err := s.db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(prompt_tokens), 0),
		coalesce(sum(completion_tokens), 0), coalesce(sum(cached_tokens), 0),
		coalesce(sum(cost_nano), 0)
		FROM usage WHERE user_id = ? AND ts >= ? AND ts < ?`,
		user, start.UnixMicro(), end.UnixMicro()).
		Scan(&m.Requests, &m.Usage.PromptTokens, &m.Usage.CompletionTokens,
			&m.Usage.CachedPromptTokens, &m.Cost)
	if err != nil {
		return MonthlyUsage{}, fmt.Errorf("summing monthly usage: %w", err)
	}
	return m, nil
}

// ReserveBudget implements [Store]. The transaction starts IMMEDIATE, taking SQLite's write
// lock, so the check and the update are atomic.
func (s *SQLite) ReserveBudget(ctx context.Context, r BudgetReservation) (USD, error) {
	var left USD
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := sqliteExpire(ctx, tx, r); err != nil {
			return err
		}
		_, start, end := monthOf(r.Now)
		_, err := tx.ExecContext(ctx, `INSERT INTO monthly_budgets
			(user_id, month, budget_nano, spent_nano)
			SELECT ?1, ?2, ?3, (SELECT coalesce(sum(cost_nano), 0) FROM usage
				WHERE user_id = ?1 AND ts >= ?4 AND ts < ?5)
			WHERE NOT EXISTS (SELECT 1 FROM monthly_budgets WHERE user_id = ?1 AND month = ?2)`,
			r.User, r.Month, int64(r.Budget), start.UnixMicro(), end.UnixMicro())
		if err != nil {
			return fmt.Errorf("opening month: %w", err)
		}
		err = tx.QueryRowContext(ctx, `UPDATE monthly_budgets
			SET reserved_nano = reserved_nano + ?3, budget_nano = ?4
			WHERE user_id = ?1 AND month = ?2 AND spent_nano + reserved_nano + ?3 <= ?4
			RETURNING budget_nano - spent_nano - reserved_nano`,
			r.User, r.Month, int64(r.Amount), int64(r.Budget)).Scan(&left)
		if errors.Is(err, sql.ErrNoRows) {
			return sqliteExceeded(ctx, tx, r)
		}
		if err != nil {
			return fmt.Errorf("reserving: %w", err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO budget_reservations
			(id, user_id, month, amount_nano, expires_at) VALUES (?, ?, ?, ?, ?)`,
			r.ID, r.User, r.Month, int64(r.Amount), r.Expires.UnixMicro())
		if err != nil {
			return fmt.Errorf("recording reservation: %w", err)
		}
		return nil
	})
	return left, err
}

// sqliteExpire releases the user's reservations that expired by r.Now.
func sqliteExpire(ctx context.Context, tx *sql.Tx, r BudgetReservation) error {
	var gone int64
	err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(amount_nano), 0)
		FROM budget_reservations WHERE user_id = ? AND month = ? AND expires_at <= ?`,
		r.User, r.Month, r.Now.UnixMicro()).Scan(&gone)
	if err != nil || gone == 0 {
		return err
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM budget_reservations
		WHERE user_id = ? AND month = ? AND expires_at <= ?`, r.User, r.Month, r.Now.UnixMicro())
	if err != nil {
		return fmt.Errorf("releasing expired reservations: %w", err)
	}
	_, err = tx.ExecContext(ctx, `UPDATE monthly_budgets SET reserved_nano = reserved_nano - ?
		WHERE user_id = ? AND month = ?`, gone, r.User, r.Month)
	return err
}

func sqliteExceeded(ctx context.Context, tx *sql.Tx, r BudgetReservation) error {
	var left USD
	err := tx.QueryRowContext(ctx, `SELECT ? - spent_nano - reserved_nano FROM monthly_budgets
		WHERE user_id = ? AND month = ?`, int64(r.Budget), r.User, r.Month).Scan(&left)
	if err != nil {
		return fmt.Errorf("reading budget: %w", err)
	}
	return &BudgetExceededError{Budget: r.Budget, Remaining: max(left, 0), Requested: r.Amount}
}

// SettleBudget implements [Store].
func (s *SQLite) SettleBudget(ctx context.Context, id, user, month string, actual USD) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var held int64
		err := tx.QueryRowContext(ctx, `DELETE FROM budget_reservations WHERE id = ?
			RETURNING amount_nano`, id).Scan(&held)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE monthly_budgets
			SET reserved_nano = reserved_nano - ?, spent_nano = spent_nano + ?
			WHERE user_id = ? AND month = ?`, held, int64(actual), user, month)
		return err
	})
	if err != nil {
		return fmt.Errorf("settling reservation: %w", err)
	}
	return nil
}
