package ledger

import (
	"errors"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestIdentify(t *testing.T) {
	ctx := testContext(t)
	st, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.PutKey(ctx, HashKey("sk-good"), "ivy", "plus"); err != nil {
		t.Fatal(err)
	}
	if err := st.PutUser(ctx, User{ID: "known", Tier: "pro"}); err != nil {
		t.Fatal(err)
	}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name    string
		trusted string
		h       http.Header
		want    Principal
		wantErr error
	}{
		{"bearer key", "", hdr("Authorization", "Bearer sk-good"), Principal{UserID: "ivy", Tier: "plus"}, nil},
		{"scheme case", "", hdr("authorization", "bearer  sk-good"), Principal{UserID: "ivy", Tier: "plus"}, nil},
		{"unknown key", "", hdr("Authorization", "Bearer sk-bad"), Principal{}, ErrUnauthenticated},
		{"no header", "", hdr(), Principal{}, ErrUnauthenticated},
		{"basic auth", "", hdr("Authorization", "Basic abc"), Principal{}, ErrUnauthenticated},
		{"empty bearer", "", hdr("Authorization", "Bearer "), Principal{}, ErrUnauthenticated},
		{"header ignored when off", "", hdr("X-User", "known"), Principal{}, ErrUnauthenticated},
		{"trusted known", "x-user", hdr("X-User", "known"), Principal{UserID: "known", Tier: "pro"}, nil},
		{"trusted new user", "x-user", hdr("X-User", "new"), Principal{UserID: "new", Tier: "free"}, nil},
		{"key beats header", "x-user", hdr("X-User", "known", "Authorization", "Bearer sk-good"),
			Principal{UserID: "ivy", Tier: "plus"}, nil},
		{"unknown key with header", "x-user", hdr("X-User", "known", "Authorization", "Bearer x"),
			Principal{}, ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := NewIdentifier(st, IdentityOptions{TrustedHeader: tt.trusted, DefaultTier: "free"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := id.Identify(ctx, tt.h)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Identify error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Identify (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIdentifyCacheTTL(t *testing.T) {
	ctx := testContext(t)
	st, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var clock atomic.Int64
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	id, err := NewIdentifier(st, IdentityOptions{CacheTTL: time.Minute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Authorization": {"Bearer sk-new"}}
	if _, err := id.Identify(ctx, h); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Identify before the key exists = %v, want ErrUnauthenticated", err)
	}
	if err := st.PutKey(ctx, HashKey("sk-new"), "jo", "free"); err != nil {
		t.Fatal(err)
	}
	// The negative answer is cached for the TTL, then the store is asked again.
	if _, err := id.Identify(ctx, h); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("Identify within the TTL = %v, want the cached ErrUnauthenticated", err)
	}
	clock.Add(int64(time.Minute + time.Second))
	if p, err := id.Identify(ctx, h); err != nil || p.UserID != "jo" {
		t.Errorf("Identify after the TTL = %+v, %v, want user jo", p, err)
	}
}
