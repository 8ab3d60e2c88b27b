package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Ledger configures usage accounting, caller identity, budgets and rate limits.
type Ledger struct {
	// DSN is the PostgreSQL connection string (URL or key=value form) of the primary, which
	// takes every write. Empty means the embedded SQLite store at EmbeddedPath, which suits a
	// single replica (`make run`); several replicas need PostgreSQL.
	DSN string `yaml:"dsn"`
	// ReplicaDSN is an optional read replica for identity and monthly-usage reads. Default: DSN.
	ReplicaDSN string `yaml:"replica_dsn"`
	// AnalyticsDSN is an optional database for long analytic queries, so they never starve
	// request-path reads. Default: ReplicaDSN.
	AnalyticsDSN string `yaml:"analytics_dsn"`
	// Pools sizes the PostgreSQL connection pools.
	Pools LedgerPools `yaml:"pools"`
	// DataDir is the folder for the embedded database and the spool. Default "data".
	DataDir string `yaml:"data_dir"`
	// EmbeddedPath is the SQLite file used when DSN is empty.
	// Default "<data_dir>/phogate-ledger.db".
	EmbeddedPath string `yaml:"embedded_path"`
	// SpoolPath is the append-only file that keeps usage rows while the store is unreachable,
	// replayed when it returns. Default "<data_dir>/phogate-ledger.spool".
	SpoolPath string `yaml:"spool_path"`
	// QueueSize bounds the in-memory queue of usage rows waiting for a batch. When it is full,
	// rows go straight to the spool. Default 10000.
	QueueSize int `yaml:"queue_size"`
	// Batch says when a batch of usage rows is written: at MaxRows rows or MaxDelay after its
	// first row, whichever comes first.
	Batch LedgerBatch `yaml:"batch"`
	// VNDPerUSD converts USD costs to VND budgets. Default 25000. The rate, and the date and
	// source it comes from, are the operator's to set and keep current.
	VNDPerUSD float64 `yaml:"vnd_per_usd"`
	// DefaultOutputTokens is the completion size assumed when reserving budget for a request
	// that sets no max_tokens. Default 1024.
	DefaultOutputTokens int `yaml:"default_output_tokens"`
	// ReservationTTL is how long a budget reservation lives unsettled; the reservation of a
	// replica that crashed mid-request is released after it. Default 10m.
	ReservationTTL Duration `yaml:"reservation_ttl"`
	// Identity says how a caller is identified.
	Identity LedgerIdentity `yaml:"identity"`
	// KeyCache bounds the in-process cache of API-key lookups.
	KeyCache LedgerKeyCache `yaml:"key_cache"`
	// Tiers are the user tiers with their budgets, rate limits and models. Default: one
	// unlimited tier named "default".
	Tiers []LedgerTier `yaml:"tiers"`
	// APIKeys are API keys written to the store at start (as SHA-256 hashes).
	APIKeys []LedgerAPIKey `yaml:"api_keys"`
	// Users are users written to the store at start, with their tier and an optional budget.
	Users []LedgerUser `yaml:"users"`
}

// LedgerPools sizes the PostgreSQL pools. Each is a maximum number of connections.
type LedgerPools struct {
	// Write serves usage batches and budget reservations. Default 8.
	Write int32 `yaml:"write"`
	// Read serves key lookups and monthly-usage reads. Default 8.
	Read int32 `yaml:"read"`
	// Analytics serves reports. Default 2.
	Analytics int32 `yaml:"analytics"`
}

// LedgerBatch says when a batch of usage rows is written.
type LedgerBatch struct {
	// MaxRows is the largest batch. Default 500.
	MaxRows int `yaml:"max_rows"`
	// MaxDelay is the longest a row waits for its batch. Default 200ms.
	MaxDelay Duration `yaml:"max_delay"`
}

// Identity modes.
const (
	IdentityAPIKey        = "api_key"
	IdentityTrustedHeader = "trusted_header"
)

// Over-budget actions.
const (
	OverBudgetReject    = "reject"
	OverBudgetDowngrade = "downgrade"
)

// LedgerIdentity says how a caller is identified.
type LedgerIdentity struct {
	// Mode is "api_key" (default): the caller sends "Authorization: Bearer <key>", looked up
	// by its hash; or "trusted_header": a trusted backend in front of the gateway names the
	// user in Header, and API keys are still accepted when present. Use trusted_header only
	// when clients cannot reach the gateway directly, since any client could set the header.
	Mode string `yaml:"mode"`
	// Header names the trusted user-id header. Default "x-phochat-user-id".
	Header string `yaml:"header"`
	// DefaultTier is the tier of a user the store does not know. Default: the first tier.
	DefaultTier string `yaml:"default_tier"`
}

// LedgerKeyCache bounds the in-process API-key cache.
type LedgerKeyCache struct {
	// Size is the most keys kept. Default 10000.
	Size int `yaml:"size"`
	// TTL is how long a lookup (found or not) is trusted; a revoked key works at most this
	// long. Default 1m.
	TTL Duration `yaml:"ttl"`
}

// LedgerTier is one user tier.
type LedgerTier struct {
	// Name identifies the tier. Required.
	Name string `yaml:"name"`
	// MonthlyBudgetVND is what a user of the tier may spend per calendar month (UTC), in VND.
	// 0 means unlimited.
	MonthlyBudgetVND int64 `yaml:"monthly_budget_vnd"`
	// RPM is the requests per minute a user of the tier may send. 0 means unlimited.
	RPM int `yaml:"rpm"`
	// TPM is the tokens (prompt plus estimated completion) per minute a user may use.
	// 0 means unlimited.
	TPM int `yaml:"tpm"`
	// TierRPM is the requests per minute all users of the tier together may send.
	// 0 means unlimited.
	TierRPM int `yaml:"tier_rpm"`
	// TierTPM is the tokens per minute all users of the tier together may use.
	// 0 means unlimited.
	TierTPM int `yaml:"tier_tpm"`
	// Models are the models the tier may use. Empty means all.
	Models []string `yaml:"models"`
	// DowngradeTo is the model served instead when a user of the tier is over budget and
	// OverBudget is "downgrade".
	DowngradeTo string `yaml:"downgrade_to"`
	// OverBudget is "reject" (default: 429) or "downgrade" (serve DowngradeTo).
	OverBudget string `yaml:"over_budget"`
}

// LedgerAPIKey is an API key seeded into the store at start.
type LedgerAPIKey struct {
	// KeyEnv names the environment variable holding the key. Preferred over Key.
	KeyEnv string `yaml:"key_env"`
	// Key is the key itself, for demos only; set exactly one of Key and KeyEnv.
	Key Secret `yaml:"key"`
	// User is the user the key belongs to. Required.
	User string `yaml:"user"`
	// Tier is the user's tier. Default: Identity.DefaultTier.
	Tier string `yaml:"tier"`
}

// LedgerUser is a user seeded into the store at start.
type LedgerUser struct {
	// ID identifies the user. Required.
	ID string `yaml:"id"`
	// Tier is the user's tier. Default: Identity.DefaultTier.
	Tier string `yaml:"tier"`
	// MonthlyBudgetVND overrides the tier's budget for this user when set.
	MonthlyBudgetVND *int64 `yaml:"monthly_budget_vnd"`
}

// Ledger defaults.
const (
	DefaultLedgerDataDir         = "data"
	DefaultLedgerQueueSize       = 10000
	DefaultLedgerBatchRows       = 500
	DefaultLedgerBatchDelay      = 200 * time.Millisecond
	DefaultVNDPerUSD             = 25000
	DefaultOutputTokens          = 1024
	DefaultReservationTTL        = 10 * time.Minute
	DefaultTrustedUserHeader     = "x-phochat-user-id"
	DefaultLedgerKeyCacheSize    = 10000
	DefaultLedgerKeyCacheTTL     = time.Minute
	DefaultLedgerWritePool       = 8
	DefaultLedgerReadPool        = 8
	DefaultLedgerAnalyticsPool   = 2
	defaultLedgerTierName        = "default"
	maxLedgerBatchRows           = 100000
	defaultLedgerEmbeddedFile    = "phogate-ledger.db"
	defaultLedgerSpoolFile       = "phogate-ledger.spool"
	maxLedgerMonthlyBudgetVND    = 1 << 50
	maxLedgerDefaultOutputTokens = 1 << 24
)

func (x *Ledger) applyDefaults(c *Config) {
	setDefault(&x.ReplicaDSN, x.DSN)
	setDefault(&x.AnalyticsDSN, x.ReplicaDSN)
	setDefault(&x.Pools.Write, DefaultLedgerWritePool)
	setDefault(&x.Pools.Read, DefaultLedgerReadPool)
	setDefault(&x.Pools.Analytics, DefaultLedgerAnalyticsPool)
	setDefault(&x.DataDir, DefaultLedgerDataDir)
	setDefault(&x.EmbeddedPath, filepath.Join(x.DataDir, defaultLedgerEmbeddedFile))
	setDefault(&x.SpoolPath, filepath.Join(x.DataDir, defaultLedgerSpoolFile))
	setDefault(&x.QueueSize, DefaultLedgerQueueSize)
	setDefault(&x.Batch.MaxRows, DefaultLedgerBatchRows)
	setDefault(&x.Batch.MaxDelay.Duration, DefaultLedgerBatchDelay)
	setDefault(&x.VNDPerUSD, DefaultVNDPerUSD)
	setDefault(&x.DefaultOutputTokens, DefaultOutputTokens)
	setDefault(&x.ReservationTTL.Duration, DefaultReservationTTL)
	setDefault(&x.Identity.Mode, IdentityAPIKey)
	setDefault(&x.Identity.Header, DefaultTrustedUserHeader)
	x.Identity.Header = strings.ToLower(x.Identity.Header)
	setDefault(&x.KeyCache.Size, DefaultLedgerKeyCacheSize)
	setDefault(&x.KeyCache.TTL.Duration, DefaultLedgerKeyCacheTTL)
	if len(x.Tiers) == 0 {
		x.Tiers = []LedgerTier{{Name: defaultLedgerTierName}}
	}
	for i := range x.Tiers {
		setDefault(&x.Tiers[i].OverBudget, OverBudgetReject)
	}
	setDefault(&x.Identity.DefaultTier, x.Tiers[0].Name)
	for i := range x.APIKeys {
		setDefault(&x.APIKeys[i].Tier, x.Identity.DefaultTier)
	}
	for i := range x.Users {
		setDefault(&x.Users[i].Tier, x.Identity.DefaultTier)
	}
}

func (x *Ledger) validate(v *validator, c *Config) {
	dsns := map[string]string{
		"ledger.dsn": x.DSN, "ledger.replica_dsn": x.ReplicaDSN,
		"ledger.analytics_dsn": x.AnalyticsDSN,
	}
	for _, path := range sortedKeys(dsns) {
		validateDSN(v, path, dsns[path])
	}
	if x.DSN == "" && x.ReplicaDSN != "" {
		v.errorf("ledger.replica_dsn", "needs ledger.dsn (the embedded store has no replica)")
	}
	pools := map[string]int32{
		"ledger.pools.write": x.Pools.Write, "ledger.pools.read": x.Pools.Read,
		"ledger.pools.analytics": x.Pools.Analytics,
	}
	for _, path := range sortedKeys(pools) {
		if n := pools[path]; n < 1 || n > 1000 {
			v.errorf(path, "must be between 1 and 1000")
		}
	}
	if x.QueueSize < 1 {
		v.errorf("ledger.queue_size", "must be at least 1")
	}
	if x.Batch.MaxRows < 1 || x.Batch.MaxRows > maxLedgerBatchRows {
		v.errorf("ledger.batch.max_rows", "must be between 1 and %d", maxLedgerBatchRows)
	}
	if d := x.Batch.MaxDelay.Duration; d > time.Minute {
		v.errorf("ledger.batch.max_delay", "must be at most 1m")
	}
	if x.VNDPerUSD <= 0 || x.VNDPerUSD > 1e7 {
		v.errorf("ledger.vnd_per_usd", "must be above 0 and at most 10000000")
	}
	if x.DefaultOutputTokens < 0 || x.DefaultOutputTokens > maxLedgerDefaultOutputTokens {
		v.errorf("ledger.default_output_tokens", "must be between 0 and %d",
			maxLedgerDefaultOutputTokens)
	}
	if x.KeyCache.Size < 1 {
		v.errorf("ledger.key_cache.size", "must be at least 1")
	}
	tiers := x.validateTiers(v, c)
	x.validateIdentity(v, tiers)
	x.validateSeeds(v, tiers)
}

func validateDSN(v *validator, path, dsn string) {
	if !strings.Contains(dsn, "://") {
		return // empty, or the key=value form, which the driver checks at start
	}
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		v.errorf(path, "must be a postgres:// URL or a key=value connection string")
	}
}

// validateTiers checks the tiers and returns them by name.
func (x *Ledger) validateTiers(v *validator, c *Config) map[string]bool {
	names := map[string]bool{}
	for i, t := range x.Tiers {
		path := fmt.Sprintf("ledger.tiers[%d]", i)
		v.checkName(path+".name", "tier", t.Name, names)
		if t.MonthlyBudgetVND < 0 || t.MonthlyBudgetVND > maxLedgerMonthlyBudgetVND {
			v.errorf(path+".monthly_budget_vnd", "must be between 0 and %d",
				int64(maxLedgerMonthlyBudgetVND))
		}
		limits := map[string]int{"rpm": t.RPM, "tpm": t.TPM, "tier_rpm": t.TierRPM,
			"tier_tpm": t.TierTPM}
		for _, field := range sortedKeys(limits) {
			if limits[field] < 0 {
				v.errorf(path+"."+field, "must not be negative")
			}
		}
		for j, m := range t.Models {
			if _, ok := c.Model(m); !ok {
				v.errorf(fmt.Sprintf("%s.models[%d]", path, j),
					"model %q is not defined under models", m)
			}
		}
		x.validateOverBudget(v, c, path, t)
	}
	return names
}

func (x *Ledger) validateOverBudget(v *validator, c *Config, path string, t LedgerTier) {
	switch t.OverBudget {
	case OverBudgetReject:
	case OverBudgetDowngrade:
		if t.DowngradeTo == "" {
			v.errorf(path+".downgrade_to", "required when over_budget is %q", OverBudgetDowngrade)
		}
	default:
		v.errorf(path+".over_budget", "%q must be %q or %q", t.OverBudget, OverBudgetReject,
			OverBudgetDowngrade)
	}
	if t.DowngradeTo == "" {
		return
	}
	if _, ok := c.Model(t.DowngradeTo); !ok {
		v.errorf(path+".downgrade_to", "model %q is not defined under models", t.DowngradeTo)
	}
}

func (x *Ledger) validateIdentity(v *validator, tiers map[string]bool) {
	switch x.Identity.Mode {
	case IdentityAPIKey, IdentityTrustedHeader:
	default:
		v.errorf("ledger.identity.mode", "%q must be %q or %q", x.Identity.Mode, IdentityAPIKey,
			IdentityTrustedHeader)
	}
	if x.Identity.Header == "authorization" {
		v.errorf("ledger.identity.header", "must not be the authorization header")
	}
	if !tiers[x.Identity.DefaultTier] {
		v.errorf("ledger.identity.default_tier", "tier %q is not defined under ledger.tiers",
			x.Identity.DefaultTier)
	}
}

func (x *Ledger) validateSeeds(v *validator, tiers map[string]bool) {
	for i, k := range x.APIKeys {
		path := fmt.Sprintf("ledger.api_keys[%d]", i)
		if (k.Key == "") == (k.KeyEnv == "") {
			v.errorf(path, "set exactly one of key and key_env")
		}
		if k.User == "" {
			v.errorf(path+".user", "required")
		}
		if !tiers[k.Tier] {
			v.errorf(path+".tier", "tier %q is not defined under ledger.tiers", k.Tier)
		}
	}
	for i, u := range x.Users {
		path := fmt.Sprintf("ledger.users[%d]", i)
		if u.ID == "" {
			v.errorf(path+".id", "required")
		}
		if !tiers[u.Tier] {
			v.errorf(path+".tier", "tier %q is not defined under ledger.tiers", u.Tier)
		}
		if b := u.MonthlyBudgetVND; b != nil && (*b < 0 || *b > maxLedgerMonthlyBudgetVND) {
			v.errorf(path+".monthly_budget_vnd", "must be between 0 and %d",
				int64(maxLedgerMonthlyBudgetVND))
		}
	}
}

// Tier returns the ledger tier named name.
func (x *Ledger) Tier(name string) (*LedgerTier, bool) {
	for i := range x.Tiers {
		if x.Tiers[i].Name == name {
			return &x.Tiers[i], true
		}
	}
	return nil, false
}
