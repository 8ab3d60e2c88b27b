package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/phochat/phogate/test/testenv"
)

// defaultTestTimeout bounds every test's context.
const defaultTestTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// postgresURL returns a fresh throw-away database, dropped after the test.
func postgresURL(t testing.TB) string {
	t.Helper()
	return testenv.PostgresURL(t)
}

// redisClient returns a client of a Redis database this test holds alone. Call it once per
// test: each call leases another database.
func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	return testenv.Redis(t)
}
