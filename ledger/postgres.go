package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the PostgreSQL [Store]. It keeps three pools: writes and budget reservations go
// to the primary, key lookups and monthly sums to an optional replica, and reports to an
// analytics database. It is safe for concurrent use.
type Postgres struct {
	write, read, analytics *pgxpool.Pool
}

var _ Store = (*Postgres)(nil)

// PostgresOptions configures [OpenPostgres].
type PostgresOptions struct {
	// DSN is the primary. Required.
	DSN string
	// ReplicaDSN serves reads. Default: DSN.
	ReplicaDSN string
	// AnalyticsDSN serves reports. Default: ReplicaDSN.
	AnalyticsDSN string
	// WriteConns, ReadConns and AnalyticsConns bound each pool. Default 8, 8 and 2.
	WriteConns, ReadConns, AnalyticsConns int32
}

// migrationLockID is the advisory lock key that serialises schema migrations across
// replicas starting at once ("phogate" in ASCII).
const migrationLockID = 0x70686f67617465

// OpenPostgres connects the pools and applies pending migrations. ctx bounds connecting and
// migrating only.
func OpenPostgres(ctx context.Context, o PostgresOptions) (*Postgres, error) {
	if o.ReplicaDSN == "" {
		o.ReplicaDSN = o.DSN
	}
	if o.AnalyticsDSN == "" {
		o.AnalyticsDSN = o.ReplicaDSN
	}
	p := &Postgres{}
	var err error
	if p.write, err = newPool(ctx, o.DSN, o.WriteConns, 8); err != nil {
		return nil, fmt.Errorf("primary pool: %w", err)
	}
	if p.read, err = newPool(ctx, o.ReplicaDSN, o.ReadConns, 8); err != nil {
		p.Close()
		return nil, fmt.Errorf("replica pool: %w", err)
	}
	if p.analytics, err = newPool(ctx, o.AnalyticsDSN, o.AnalyticsConns, 2); err != nil {
		p.Close()
		return nil, fmt.Errorf("analytics pool: %w", err)
	}
	if err := p.migrate(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func newPool(ctx context.Context, dsn string, size, def int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing DSN: %w", err)
	}
	cfg.MaxConns = def
	if size > 0 {
		cfg.MaxConns = size
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// migrate applies pending migrations in one transaction under an advisory lock, so replicas
// starting together apply each step once.
func (p *Postgres) migrate(ctx context.Context) error {
	steps, err := migrations("postgres")
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, p.write, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockID); err != nil {
			return fmt.Errorf("taking migration lock: %w", err)
		}
		return applyMigrations(schemaTx{
			exec: func(q string, args ...any) error {
				_, err := tx.Exec(ctx, q, args...)
				return err
			},
			queryInt: func(q string) (int, error) {
				var n int
				err := tx.QueryRow(ctx, q).Scan(&n)
				return n, err
			},
			createTable: `CREATE TABLE IF NOT EXISTS ledger_schema_migrations (
			version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
			record: `INSERT INTO ledger_schema_migrations (version) VALUES ($1)`,
		}, steps)
	})
	if err != nil {
		return fmt.Errorf("migrating ledger schema: %w", err)
	}
	return nil
}

// Close closes the pools.
func (p *Postgres) Close() error {
	for _, pool := range []*pgxpool.Pool{p.write, p.read, p.analytics} {
		if pool != nil {
			pool.Close()
		}
	}
	return nil
}

// Pools returns the pools by role ("write", "read", "analytics"), for metrics and reports.
// The caller must not close them.
func (p *Postgres) Pools() map[string]*pgxpool.Pool {
	return map[string]*pgxpool.Pool{"write": p.write, "read": p.read, "analytics": p.analytics}
}

// LookupKey implements [Store].
func (p *Postgres) LookupKey(ctx context.Context, h KeyHash) (Principal, error) {
	var pr Principal
	err := p.read.QueryRow(ctx, `SELECT u.id, u.tier, u.monthly_budget_vnd
		FROM api_keys k JOIN users u ON u.id = k.user_id
		WHERE k.key_sha256 = $1 AND k.revoked_at IS NULL`, h[:]).
		Scan(&pr.UserID, &pr.Tier, &pr.MonthlyBudgetVND)
	if errors.Is(err, pgx.ErrNoRows) {
		return Principal{}, ErrNotFound
	}
	if err != nil {
		return Principal{}, fmt.Errorf("looking up key: %w", err)
	}
	return pr, nil
}

// PutKey implements [Store].
func (p *Postgres) PutKey(ctx context.Context, h KeyHash, user, tier string) error {
	err := pgx.BeginFunc(ctx, p.write, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO users (id, tier) VALUES ($1, $2)
			ON CONFLICT (id) DO NOTHING`, user, tier)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO api_keys (key_sha256, user_id) VALUES ($1, $2)
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
func (p *Postgres) PutUser(ctx context.Context, u User) error {
	_, err := p.write.Exec(ctx, `INSERT INTO users (id, tier, monthly_budget_vnd)
		VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE
		SET tier = excluded.tier, monthly_budget_vnd = excluded.monthly_budget_vnd`,
		u.ID, u.Tier, u.MonthlyBudgetVND)
	if err != nil {
		return fmt.Errorf("storing user: %w", err)
	}
	return nil
}

// User implements [Store].
func (p *Postgres) User(ctx context.Context, id string) (User, error) {
	u := User{ID: id}
	err := p.read.QueryRow(ctx, `SELECT tier, monthly_budget_vnd FROM users WHERE id = $1`, id).
		Scan(&u.Tier, &u.MonthlyBudgetVND)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("reading user: %w", err)
	}
	return u, nil
}

// PutTiers implements [Store].
func (p *Postgres) PutTiers(ctx context.Context, tiers []Tier) error {
	err := pgx.BeginFunc(ctx, p.write, func(tx pgx.Tx) error {
		for _, t := range tiers {
			_, err := tx.Exec(ctx, `INSERT INTO tiers (name, monthly_budget_vnd) VALUES ($1, $2)
				ON CONFLICT (name) DO UPDATE
				SET monthly_budget_vnd = excluded.monthly_budget_vnd, updated_at = now()`,
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

// usageColumns are the columns a usage row is copied into, in [usageValues] order.
var usageColumns = []string{"request_id", "user_id", "tier", "requested_model", "served_model",
	"provider", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_nano",
	"cache_layer", "latency_ms", "status", "estimated", "ts"}

func usageValues(r Row) []any {
	return []any{r.RequestID, r.UserID, r.Tier, r.RequestedModel, r.ServedModel, r.Provider,
		r.Usage.PromptTokens, r.Usage.CompletionTokens, r.Usage.CachedPromptTokens,
		int64(r.Cost), r.CacheLayer, r.Latency.Milliseconds(), r.Status, r.Estimated,
		r.Time.UTC()}
}

// WriteUsage implements [Store]. It copies the rows into a per-session staging table with
// COPY and moves them into usage with ON CONFLICT (request_id) DO NOTHING, in one
// transaction.
func (p *Postgres) WriteUsage(ctx context.Context, rows []Row) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	if err := validateRows(rows); err != nil {
		return 0, err
	}
	var n int64
	err := pgx.BeginFunc(ctx, p.write, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS usage_stage (
			request_id text, user_id text, tier text, requested_model text,
			served_model text, provider text, prompt_tokens bigint,
			completion_tokens bigint, cached_tokens bigint, cost_nano bigint,
			cache_layer text, latency_ms bigint, status integer, estimated boolean,
			ts timestamptz) ON COMMIT DELETE ROWS`)
		if err != nil {
			return fmt.Errorf("creating staging table: %w", err)
		}
		src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			return usageValues(rows[i]), nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"usage_stage"}, usageColumns, src); err != nil {
			return fmt.Errorf("copying rows: %w", err)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO usage (request_id, user_id, tier, requested_model,
			served_model, provider, prompt_tokens, completion_tokens, cached_tokens, cost_nano,
			cache_layer, latency_ms, status, estimated, ts)
			SELECT * FROM usage_stage ON CONFLICT (request_id) DO NOTHING`)
		if err != nil {
			return fmt.Errorf("inserting rows: %w", err)
		}
		n = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("writing usage: %w", err)
	}
	return n, nil
}

// MonthlyUsage implements [Store], in one statement on the read pool.
func (p *Postgres) MonthlyUsage(ctx context.Context, user string, t time.Time) (MonthlyUsage, error) {
	_, start, end := monthOf(t)
	var m MonthlyUsage
	err := p.read.QueryRow(ctx, `SELECT count(*), coalesce(sum(prompt_tokens), 0),
		coalesce(sum(completion_tokens), 0), coalesce(sum(cached_tokens), 0),
		coalesce(sum(cost_nano), 0)
		FROM usage WHERE user_id = $1 AND ts >= $2 AND ts < $3`, user, start, end).
		Scan(&m.Requests, &m.Usage.PromptTokens, &m.Usage.CompletionTokens,
			&m.Usage.CachedPromptTokens, &m.Cost)
	if err != nil {
		return MonthlyUsage{}, fmt.Errorf("summing monthly usage: %w", err)
	}
	return m, nil
}

// ReserveBudget implements [Store]. The conditional UPDATE takes the month's row lock, so
// concurrent reservations from any number of replicas are serialised by PostgreSQL.
func (p *Postgres) ReserveBudget(ctx context.Context, r BudgetReservation) (USD, error) {
	var left USD
	err := pgx.BeginFunc(ctx, p.write, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `WITH gone AS (
			DELETE FROM budget_reservations
			WHERE user_id = $1 AND month = $2 AND expires_at <= $3 RETURNING amount_nano)
			UPDATE monthly_budgets
			SET reserved_nano = reserved_nano - (SELECT sum(amount_nano) FROM gone)
			WHERE user_id = $1 AND month = $2 AND EXISTS (SELECT 1 FROM gone)`,
			r.User, r.Month, r.Now)
		if err != nil {
			return fmt.Errorf("releasing expired reservations: %w", err)
		}
		left, err = reserveRow(ctx, tx, r)
		if errors.Is(err, pgx.ErrNoRows) {
			// First reservation of the month, or over budget: open the month if it is
			// missing, then try once more.
			if err := createMonth(ctx, tx, r); err != nil {
				return err
			}
			left, err = reserveRow(ctx, tx, r)
		}
		if errors.Is(err, pgx.ErrNoRows) {
			return exceeded(ctx, tx, r)
		}
		if err != nil {
			return fmt.Errorf("reserving: %w", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO budget_reservations
			(id, user_id, month, amount_nano, expires_at) VALUES ($1, $2, $3, $4, $5)`,
			r.ID, r.User, r.Month, r.Amount, r.Expires)
		if err != nil {
			return fmt.Errorf("recording reservation: %w", err)
		}
		return nil
	})
	return left, err
}

func reserveRow(ctx context.Context, tx pgx.Tx, r BudgetReservation) (USD, error) {
	var left USD
	err := tx.QueryRow(ctx, `UPDATE monthly_budgets
		SET reserved_nano = reserved_nano + $3, budget_nano = $4
		WHERE user_id = $1 AND month = $2 AND spent_nano + reserved_nano + $3 <= $4
		RETURNING budget_nano - spent_nano - reserved_nano`,
		r.User, r.Month, r.Amount, r.Budget).Scan(&left)
	return left, err
}

// createMonth creates the user's month, when missing, from the usage rows already stored.
func createMonth(ctx context.Context, tx pgx.Tx, r BudgetReservation) error {
	_, start, end := monthOf(r.Now)
	_, err := tx.Exec(ctx, `INSERT INTO monthly_budgets (user_id, month, budget_nano, spent_nano)
		SELECT $1, $2, $3, (SELECT coalesce(sum(cost_nano), 0) FROM usage
			WHERE user_id = $1 AND ts >= $4 AND ts < $5)
		WHERE NOT EXISTS (SELECT 1 FROM monthly_budgets WHERE user_id = $1 AND month = $2)
		ON CONFLICT (user_id, month) DO NOTHING`, r.User, r.Month, r.Budget, start, end)
	if err != nil {
		return fmt.Errorf("opening month: %w", err)
	}
	return nil
}

func exceeded(ctx context.Context, tx pgx.Tx, r BudgetReservation) error {
	var left USD
	err := tx.QueryRow(ctx, `SELECT $3::bigint - spent_nano - reserved_nano FROM monthly_budgets
		WHERE user_id = $1 AND month = $2`, r.User, r.Month, r.Budget).Scan(&left)
	if err != nil {
		return fmt.Errorf("reading budget: %w", err)
	}
	return &BudgetExceededError{Budget: r.Budget, Remaining: max(left, 0), Requested: r.Amount}
}

// SettleBudget implements [Store].
func (p *Postgres) SettleBudget(ctx context.Context, id, user, month string, actual USD) error {
	err := pgx.BeginFunc(ctx, p.write, func(tx pgx.Tx) error {
		var held USD
		err := tx.QueryRow(ctx, `DELETE FROM budget_reservations WHERE id = $1
			RETURNING amount_nano`, id).Scan(&held)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE monthly_budgets
			SET reserved_nano = reserved_nano - $3, spent_nano = spent_nano + $4
			WHERE user_id = $1 AND month = $2`, user, month, held, actual)
		return err
	})
	if err != nil {
		return fmt.Errorf("settling reservation: %w", err)
	}
	return nil
}

// ModelUsage is one model's usage over a period.
type ModelUsage struct {
	// Model is the served model.
	Model string
	// Requests counts usage rows.
	Requests int64
	// Usage sums the token counts.
	Usage Usage
	// Cost sums the costs.
	Cost USD
}

// UsageByModel sums usage rows in [from, to) per served model, most expensive first, on the
// analytics pool so that reports never take request-path connections.
func (p *Postgres) UsageByModel(ctx context.Context, from, to time.Time) ([]ModelUsage, error) {
	rows, err := p.analytics.Query(ctx, `SELECT served_model, count(*), sum(prompt_tokens),
		sum(completion_tokens), sum(cached_tokens), sum(cost_nano)
		FROM usage WHERE ts >= $1 AND ts < $2
		GROUP BY served_model ORDER BY sum(cost_nano) DESC, served_model`, from, to)
	if err != nil {
		return nil, fmt.Errorf("summing usage by model: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ModelUsage, error) {
		var m ModelUsage
		err := r.Scan(&m.Model, &m.Requests, &m.Usage.PromptTokens, &m.Usage.CompletionTokens,
			&m.Usage.CachedPromptTokens, &m.Cost)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("summing usage by model: %w", err)
	}
	return out, nil
}
