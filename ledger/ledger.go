package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/phochat/phogate/internal/config"
)

// Options configures [New].
type Options struct {
	// Config is the gateway configuration; New reads its ledger section and model prices.
	// Required.
	Config *config.Config
	// Store is the store to use. Nil opens the one the config names: PostgreSQL at
	// ledger.dsn, or SQLite at ledger.embedded_path when the DSN is empty.
	Store Store
	// Redis, when not nil, arbitrates budgets and rate limits across replicas.
	Redis redis.UniversalClient
	// Registerer receives the ledger's metrics. Nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Logger receives lifecycle and outage messages. Default: discarded.
	Logger *slog.Logger
	// Getenv reads the environment variables named by ledger.api_keys[].key_env. Default
	// os.Getenv.
	Getenv func(string) string
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Ledger is the facade the request path uses: identity, admission (rate limits and budget)
// and settlement with usage recording. It is safe for concurrent use.
type Ledger struct {
	cfg    config.Ledger
	prices map[string]Price
	tiers  map[string]config.LedgerTier

	store     Store
	ownsStore bool
	writer    *Writer
	ident     *Identifier
	budget    *Budget
	limiter   *RateLimiter
	est       Estimator
	m         *Metrics
	log       *slog.Logger
	now       func() time.Time
}

// New opens the store (unless given), seeds the configured tiers, users and API keys, opens
// the spool and starts the usage writer. ctx bounds the start-up only. Call [Ledger.Close].
func New(ctx context.Context, o Options) (*Ledger, error) {
	if o.Config == nil {
		return nil, errors.New("ledger: config is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := o.Config.Ledger
	l := &Ledger{cfg: c, prices: map[string]Price{}, tiers: map[string]config.LedgerTier{},
		store: o.Store, m: NewMetrics(o.Registerer), log: o.Logger.With("component", "ledger"),
		now: o.Now}
	for _, m := range o.Config.Models {
		l.prices[m.Name] = PriceFromConfig(m.Price)
	}
	for _, t := range c.Tiers {
		l.tiers[t.Name] = t
	}
	if err := l.openStore(ctx, o); err != nil {
		return nil, err
	}
	if err := l.build(ctx, o); err != nil {
		if l.ownsStore {
			l.store.Close()
		}
		return nil, err
	}
	return l, nil
}

func (l *Ledger) openStore(ctx context.Context, o Options) error {
	if l.store != nil {
		return nil
	}
	c := l.cfg
	var err error
	if c.DSN == "" {
		l.store, err = OpenSQLite(ctx, c.EmbeddedPath)
		l.log.Info("ledger store opened", "kind", "sqlite", "path", c.EmbeddedPath)
	} else {
		var pg *Postgres
		pg, err = OpenPostgres(ctx, PostgresOptions{DSN: c.DSN, ReplicaDSN: c.ReplicaDSN,
			AnalyticsDSN: c.AnalyticsDSN, WriteConns: c.Pools.Write, ReadConns: c.Pools.Read,
			AnalyticsConns: c.Pools.Analytics})
		if err == nil {
			l.store = pg
			if o.Registerer != nil {
				o.Registerer.MustRegister(NewPoolCollector(pg.Pools()))
			}
			l.log.Info("ledger store opened", "kind", "postgres")
		}
	}
	if err != nil {
		return fmt.Errorf("opening ledger store: %w", err)
	}
	l.ownsStore = true
	return nil
}

func (l *Ledger) build(ctx context.Context, o Options) error {
	c := l.cfg
	if err := l.seed(ctx, o.Getenv); err != nil {
		return err
	}
	var err error
	trusted := ""
	if c.Identity.Mode == config.IdentityTrustedHeader {
		trusted = c.Identity.Header
	}
	l.ident, err = NewIdentifier(l.store, IdentityOptions{TrustedHeader: trusted,
		DefaultTier: c.Identity.DefaultTier, CacheSize: c.KeyCache.Size,
		CacheTTL: c.KeyCache.TTL.Duration, Now: o.Now})
	if err != nil {
		return err
	}
	l.budget, err = NewBudget(BudgetOptions{Redis: o.Redis, Store: l.store,
		VNDPerUSD: c.VNDPerUSD, TTL: c.ReservationTTL.Duration, Now: o.Now, Metrics: l.m})
	if err != nil {
		return err
	}
	if o.Redis == nil && c.DSN == "" {
		l.log.Info("budgets arbitrated by the embedded store; run one replica only")
	}
	l.limiter = NewRateLimiter(o.Redis, o.Now)
	sp, dropped, err := OpenSpool(c.SpoolPath)
	if err != nil {
		return err
	}
	if dropped > 0 {
		l.log.Warn("dropped torn tail of usage spool", "bytes", dropped)
	}
	l.writer = NewWriter(l.store, sp, WriterOptions{MaxRows: c.Batch.MaxRows,
		MaxDelay: c.Batch.MaxDelay.Duration, QueueSize: c.QueueSize, Metrics: l.m,
		Logger: o.Logger})
	return nil
}

// seed writes the configured tiers, users and API keys to the store.
func (l *Ledger) seed(ctx context.Context, getenv func(string) string) error {
	tiers := make([]Tier, 0, len(l.cfg.Tiers))
	for _, t := range l.cfg.Tiers {
		tiers = append(tiers, Tier{Name: t.Name, MonthlyBudgetVND: t.MonthlyBudgetVND})
	}
	if err := l.store.PutTiers(ctx, tiers); err != nil {
		return err
	}
	for _, u := range l.cfg.Users {
		err := l.store.PutUser(ctx, User{ID: u.ID, Tier: u.Tier, MonthlyBudgetVND: u.MonthlyBudgetVND})
		if err != nil {
			return err
		}
	}
	for i, k := range l.cfg.APIKeys {
		key := k.Key.Reveal()
		if k.KeyEnv != "" {
			if key = getenv(k.KeyEnv); key == "" {
				return fmt.Errorf("ledger.api_keys[%d]: environment variable %s is not set",
					i, k.KeyEnv)
			}
		}
		if err := l.store.PutKey(ctx, HashKey(key), k.User, k.Tier); err != nil {
			return err
		}
	}
	return nil
}

// Store returns the ledger's store, for reports.
func (l *Ledger) Store() Store { return l.store }

// Metrics returns the ledger's metrics, for [Metrics.Downgrade].
func (l *Ledger) Metrics() *Metrics { return l.m }

// Estimator returns the token estimator, for responses that report no usage.
func (l *Ledger) Estimator() *Estimator { return &l.est }

// Identify returns the caller of a request, or [ErrUnauthenticated]. See [Identifier].
func (l *Ledger) Identify(ctx context.Context, h Headers) (Principal, error) {
	p, err := l.ident.Identify(ctx, h)
	if errors.Is(err, ErrUnauthenticated) {
		l.m.rejections.WithLabelValues("unauthenticated").Inc()
	}
	return p, err
}

// Request is what [Ledger.Admit] needs to know of a request before it goes upstream.
type Request struct {
	// RequestID identifies the request.
	RequestID string
	// Model is the model the client asked for.
	Model string
	// PromptTokens is the prompt size, when known; otherwise Prompt is counted.
	PromptTokens int64
	// Prompt is the prompt text (messages' contents joined), counted when PromptTokens is 0.
	// It is neither stored nor logged.
	Prompt string
	// MaxTokens is the request's max_tokens (or max_completion_tokens); 0 means the
	// configured default output estimate.
	MaxTokens int64
}

// Admission is a request let through by [Ledger.Admit].
type Admission struct {
	// Principal is the caller.
	Principal Principal
	// Model is the model to serve: the requested one, or the tier's downgrade model when the
	// requested one would exceed the budget.
	Model string
	// Downgraded is true when Model is the tier's downgrade model.
	Downgraded bool
	// PromptTokens is the prompt size used for the estimate.
	PromptTokens int64
	// Estimate is the cost reserved.
	Estimate USD
	// Reservation is the budget held; settle it with [Ledger.Settle] or [Ledger.Cancel].
	Reservation *Reservation
}

// Admit checks the rate limits, then reserves the estimated cost (prompt tokens plus
// MaxTokens, at the model's price) against the caller's monthly budget. A model without a
// configured price, such as a routing alias, is estimated at the most expensive model the
// tier may use; call Admit after routing for a tighter estimate. Over budget it serves the
// tier's downgrade model when the tier says so, and otherwise returns a
// [*BudgetExceededError]; it may also return a [*RateLimitedError]. Other errors mean Redis
// or the store failed; the caller chooses whether to fail open. The tier's model list is
// enforced by routing, not here. ctx bounds the Redis and store calls.
func (l *Ledger) Admit(ctx context.Context, p Principal, req Request) (*Admission, error) {
	tier := l.tierOf(p)
	a := &Admission{Principal: p, Model: req.Model, PromptTokens: req.PromptTokens}
	if a.PromptTokens <= 0 {
		a.PromptTokens = l.est.Count(req.Model, req.Prompt)
	}
	out := req.MaxTokens
	if out <= 0 {
		out = int64(l.cfg.DefaultOutputTokens)
	}
	lim := Limits{UserRPM: tier.RPM, UserTPM: tier.TPM, TierRPM: tier.TierRPM,
		TierTPM: tier.TierTPM}
	if err := l.limiter.Allow(ctx, p.UserID, tier.Name, lim, a.PromptTokens+out); err != nil {
		var rl *RateLimitedError
		if errors.As(err, &rl) {
			l.m.rejections.WithLabelValues(rl.Reason).Inc()
		}
		return nil, err
	}

	limit := l.budget.Limit(p, tier.MonthlyBudgetVND)
	usage := Usage{PromptTokens: a.PromptTokens, CompletionTokens: out}
	a.Estimate = l.estimate(tier, req.Model, usage)
	res, err := l.budget.Reserve(ctx, p, limit, a.Estimate)
	var be *BudgetExceededError
	if errors.As(err, &be) && tier.OverBudget == config.OverBudgetDowngrade &&
		tier.DowngradeTo != "" && tier.DowngradeTo != req.Model {
		a.Model, a.Downgraded = tier.DowngradeTo, true
		a.Estimate = Cost(l.prices[a.Model], usage)
		res, err = l.budget.Reserve(ctx, p, limit, a.Estimate)
		if err == nil {
			l.m.Downgrade("over_budget")
		}
	}
	if errors.As(err, &be) {
		l.m.rejections.WithLabelValues("over_budget").Inc()
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	a.Reservation = res
	return a, nil
}

// estimate prices usage on model, or, for a model without a price (such as a routing alias
// not resolved yet), on the most expensive model the tier may use.
func (l *Ledger) estimate(tier config.LedgerTier, model string, u Usage) USD {
	if p, ok := l.prices[model]; ok {
		return Cost(p, u)
	}
	var most USD
	for name, p := range l.prices {
		if len(tier.Models) == 0 || slices.Contains(tier.Models, name) {
			most = max(most, Cost(p, u))
		}
	}
	return most
}

func (l *Ledger) tierOf(p Principal) config.LedgerTier {
	if t, ok := l.tiers[p.Tier]; ok {
		return t
	}
	return l.tiers[l.cfg.Identity.DefaultTier]
}

// Cost returns what u costs on model at its configured price; an unknown model costs 0.
func (l *Ledger) Cost(model string, u Usage) USD { return Cost(l.prices[model], u) }

// Settle finishes a served request: it fills in the row's cost when zero and the row is not
// a cache hit (cache hits cost 0), settles a's reservation with that cost, and queues the
// row. a may be nil for a request admitted without a reservation. The row is queued even
// when settling fails; the error says so. ctx bounds the budget call only.
func (l *Ledger) Settle(ctx context.Context, a *Admission, row Row) error {
	if row.CacheLayer != "" {
		row.Cost = 0
	} else if row.Cost == 0 {
		row.Cost = l.Cost(row.ServedModel, row.Usage)
	}
	if row.Time.IsZero() {
		row.Time = l.now()
	}
	var serr error
	if a != nil {
		serr = l.budget.Settle(ctx, a.Reservation, row.Cost)
	}
	l.m.observeRow(l.labels(row))
	if err := l.writer.Record(row); err != nil {
		return errors.Join(serr, fmt.Errorf("recording usage: %w", err))
	}
	return serr
}

// labels returns row with the served model and tier replaced by "unknown" when they are not
// configured, so metric labels stay bounded.
func (l *Ledger) labels(row Row) Row {
	if _, ok := l.prices[row.ServedModel]; !ok {
		row.ServedModel = "unknown"
	}
	if _, ok := l.tiers[row.Tier]; !ok {
		row.Tier = "unknown"
	}
	return row
}

// Cancel releases a's reservation for a request that was not served.
func (l *Ledger) Cancel(ctx context.Context, a *Admission) error {
	if a == nil {
		return nil
	}
	return l.budget.Release(ctx, a.Reservation)
}

// Close flushes queued and spooled usage rows to the store (see [Writer.Close]) and closes
// the store if New opened it. ctx bounds the flush.
func (l *Ledger) Close(ctx context.Context) error {
	err := l.writer.Close(ctx)
	if l.ownsStore {
		err = errors.Join(err, l.store.Close())
	}
	return err
}
