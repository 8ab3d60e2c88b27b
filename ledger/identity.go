package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Headers is the read side of request headers; [net/http.Header] satisfies it. Get must be
// case-insensitive on the name.
type Headers interface {
	Get(name string) string
}

// IdentityOptions configures an [Identifier].
type IdentityOptions struct {
	// TrustedHeader, when not empty, names a header a trusted backend sets to the user's ID;
	// requests without an API key are identified by it. Empty accepts API keys only.
	TrustedHeader string
	// DefaultTier is the tier of a trusted-header user the store does not know.
	DefaultTier string
	// CacheSize bounds the lookup cache. Default 10000.
	CacheSize int
	// CacheTTL is how long a lookup, found or not, is reused. Default 1m.
	CacheTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Identifier identifies callers from request headers: an API key in
// "Authorization: Bearer <key>", looked up by its SHA-256 hash, or a trusted user-ID header.
// Lookups are cached in process, bounded in size and time, so a revoked key keeps working for
// at most CacheTTL. It is safe for concurrent use.
type Identifier struct {
	store Store
	opts  IdentityOptions
	cache *lru.Cache[string, cachedPrincipal]
}

type cachedPrincipal struct {
	p       Principal
	found   bool
	expires time.Time
}

// NewIdentifier returns an identifier reading st.
func NewIdentifier(st Store, o IdentityOptions) (*Identifier, error) {
	if o.CacheSize <= 0 {
		o.CacheSize = 10000
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c, err := lru.New[string, cachedPrincipal](o.CacheSize)
	if err != nil {
		return nil, fmt.Errorf("creating key cache: %w", err)
	}
	return &Identifier{store: st, opts: o, cache: c}, nil
}

// Identify returns the caller of a request. A present API key wins over the trusted header;
// a missing or unknown key gives [ErrUnauthenticated]. ctx bounds the store lookup on a
// cache miss.
func (id *Identifier) Identify(ctx context.Context, h Headers) (Principal, error) {
	if key, ok := bearerToken(h.Get("Authorization")); ok {
		return id.lookup(ctx, "k:"+string(hashString(key)), func(ctx context.Context) (Principal, error) {
			return id.store.LookupKey(ctx, HashKey(key))
		})
	}
	if id.opts.TrustedHeader == "" {
		return Principal{}, ErrUnauthenticated
	}
	user := strings.TrimSpace(h.Get(id.opts.TrustedHeader))
	if user == "" || len(user) > 256 {
		return Principal{}, ErrUnauthenticated
	}
	return id.lookup(ctx, "u:"+user, func(ctx context.Context) (Principal, error) {
		u, err := id.store.User(ctx, user)
		if errors.Is(err, ErrNotFound) {
			return Principal{UserID: user, Tier: id.opts.DefaultTier}, nil
		}
		return Principal{UserID: u.ID, Tier: u.Tier, MonthlyBudgetVND: u.MonthlyBudgetVND}, err
	})
}

// lookup returns the cached answer for ck, or asks load and caches its answer.
func (id *Identifier) lookup(ctx context.Context, ck string,
	load func(context.Context) (Principal, error)) (Principal, error) {
	now := id.opts.Now()
	if c, ok := id.cache.Get(ck); ok && now.Before(c.expires) {
		if !c.found {
			return Principal{}, ErrUnauthenticated
		}
		return c.p, nil
	}
	p, err := load(ctx)
	switch {
	case errors.Is(err, ErrNotFound):
		id.cache.Add(ck, cachedPrincipal{expires: now.Add(id.opts.CacheTTL)})
		return Principal{}, ErrUnauthenticated
	case err != nil:
		return Principal{}, fmt.Errorf("identifying caller: %w", err)
	}
	id.cache.Add(ck, cachedPrincipal{p: p, found: true, expires: now.Add(id.opts.CacheTTL)})
	return p, nil
}

// hashString keys the cache by the key's hash, so no key is held in memory longer than the
// request.
func hashString(key string) []byte {
	h := HashKey(key)
	return h[:]
}

// bearerToken extracts the token from an Authorization value ("Bearer <token>", scheme
// case-insensitive).
func bearerToken(v string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != "" && len(tok) <= 512
}
