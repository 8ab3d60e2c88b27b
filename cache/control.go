package cache

import (
	"strconv"
	"strings"
	"time"
)

// Control is what a request's Cache-Control header asks of the cache (RFC 9111, section 5.2.1).
type Control struct {
	// NoCache skips the lookup: the request goes upstream (its answer may still be stored).
	NoCache bool
	// NoStore skips storing the answer.
	NoStore bool
	// MaxAge, when HasMaxAge, is the oldest answer the client accepts, and also caps how long
	// the answer of this request is stored.
	MaxAge time.Duration
	// HasMaxAge reports whether max-age was given.
	HasMaxAge bool
}

// ParseCacheControl parses a Cache-Control request header value. Directive names are
// case-insensitive; unknown directives and malformed max-age values are ignored, as RFC 9111
// asks of caches.
func ParseCacheControl(h string) Control {
	var c Control
	for d := range strings.SplitSeq(h, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "no-cache":
			c.NoCache = true
		case "no-store":
			c.NoStore = true
		case "max-age":
			n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
			if err != nil || n < 0 {
				continue
			}
			n = min(n, int64(24*time.Hour/time.Second)*365*100) // no overflow of Duration
			c.MaxAge, c.HasMaxAge = time.Duration(n)*time.Second, true
		}
	}
	return c
}

// TTL returns how long to store an answer given the configured TTL: never longer than it,
// shorter when max-age asks so, and 0 (do not store) for no-store or max-age=0.
func (c Control) TTL(configured time.Duration) time.Duration {
	if c.NoStore {
		return 0
	}
	if c.HasMaxAge {
		return min(configured, c.MaxAge)
	}
	return configured
}

// LookupMaxAge returns the maxAge argument of [Cache.LookupFresh]: 0 (any age) unless max-age
// was given. A max-age=0 request accepts no stored answer, so use NoCache first.
func (c Control) LookupMaxAge() time.Duration {
	if c.HasMaxAge {
		return c.MaxAge
	}
	return 0
}

// SkipLookup reports whether the request must not be answered from the cache: no-cache, or
// max-age=0.
func (c Control) SkipLookup() bool { return c.NoCache || (c.HasMaxAge && c.MaxAge == 0) }
