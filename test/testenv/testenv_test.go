package testenv

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// defaultTestTimeout bounds every test context.
const defaultTestTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestRedisIsolated(t *testing.T) {
	ctx := testContext(t)
	a, b := Redis(t), Redis(t)
	if a.Options().DB == b.Options().DB {
		t.Fatalf("two Redis(t) clients share DB %d", a.Options().DB)
	}
	if err := a.Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if err := b.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET k on the other DB = %v, want redis.Nil", err)
	}
	if n, err := b.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("DBSIZE of a fresh DB = %d, %v; want 0", n, err)
	}
}

func TestRedisFlushedForNextTest(t *testing.T) {
	var db int
	t.Run("writer", func(t *testing.T) {
		c := Redis(t)
		db = c.Options().DB
		if err := c.Set(testContext(t), "left", "over", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
	})
	opts, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	opts.DB = db
	c := redis.NewClient(opts)
	defer c.Close()
	if n, err := c.DBSize(testContext(t)).Result(); err != nil || n != 0 {
		t.Errorf("DBSIZE of DB %d after the test = %d, %v; want 0", db, n, err)
	}
}

func TestPostgresFreshDatabase(t *testing.T) {
	ctx := testContext(t)
	var name string
	t.Run("owner", func(t *testing.T) {
		dsn1, dsn2 := PostgresURL(t), PostgresURL(t)
		c1, c2 := connect(t, dsn1), connect(t, dsn2)
		if err := c1.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, databasePrefix) {
			t.Errorf("database = %q, want prefix %q", name, databasePrefix)
		}
		var tables int
		q := "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
		if err := c1.QueryRow(ctx, q).Scan(&tables); err != nil || tables != 0 {
			t.Errorf("tables in a fresh database = %d, %v; want 0", tables, err)
		}
		if _, err := c1.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
			t.Fatal(err)
		}
		if err := c2.QueryRow(ctx, q).Scan(&tables); err != nil || tables != 0 {
			t.Errorf("tables in the other database = %d, %v; want 0", tables, err)
		}
	})

	// The subtest's cleanup dropped its databases.
	base, err := withDatabase(postgresBase.url, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	var exists bool
	err = connect(t, base).QueryRow(ctx,
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil || exists {
		t.Errorf("database %s exists after its test = %v, %v; want false", name, exists, err)
	}
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testContext(t), dsn)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestStartRedisStopRestart(t *testing.T) {
	u, stop, restart := StartRedis(t)
	ping := func() error {
		ctx, cancel := context.WithTimeout(testContext(t), probeTimeout)
		defer cancel()
		return pingRedis(ctx, u)
	}
	if err := ping(); err != nil {
		t.Fatalf("ping after start: %v", err)
	}
	stop()
	if err := ping(); err == nil {
		t.Fatal("ping after stop succeeded")
	}
	stop() // harmless twice
	restart()
	if err := ping(); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	restart() // harmless while running
}

func TestStartPostgresStopRestart(t *testing.T) {
	dsn, stop, restart := StartPostgres(t)
	ctx := testContext(t)
	if _, err := connect(t, dsn).Exec(ctx, "CREATE TABLE kept (id int)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	stop()
	if err := pingPostgres(ctx, dsn); err == nil {
		t.Fatal("ping after stop succeeded")
	}
	restart()
	var n int
	if err := connect(t, dsn).QueryRow(ctx, "SELECT count(*) FROM kept").Scan(&n); err != nil {
		t.Errorf("table after restart: %v", err)
	}
}

// TestServicesScript runs test/services.sh in its own state directory, so it starts new
// servers even though shared ones exist, and checks start, reuse and stop.
func TestServicesScript(t *testing.T) {
	dir, err := os.MkdirTemp("", "phogate-services-test-")
	if err != nil {
		t.Fatal(err)
	}
	env := "PHOGATE_SERVICES_DIR=" + dir
	t.Cleanup(func() {
		if _, err := runScript("stop", env); err != nil {
			t.Errorf("services.sh stop: %v", err)
		}
		_ = os.RemoveAll(dir)
	})

	out, err := runScript("start", env)
	if err != nil {
		t.Fatalf("services.sh start: %v", err)
	}
	got := parseEnv(out)
	ctx := testContext(t)
	if err := pingRedis(ctx, got["REDIS_URL"]); err != nil {
		t.Errorf("Redis from services.sh (%q): %v", got["REDIS_URL"], err)
	}
	if err := pingPostgres(ctx, got["DATABASE_URL"]); err != nil {
		t.Errorf("PostgreSQL from services.sh (%q): %v", got["DATABASE_URL"], err)
	}

	again, err := runScript("start", env)
	if err != nil {
		t.Fatalf("second services.sh start: %v", err)
	}
	if string(again) != string(out) {
		t.Errorf("second start printed %q, want the running servers %q", again, out)
	}

	if _, err := runScript("stop", env); err != nil {
		t.Fatalf("services.sh stop: %v", err)
	}
	if err := pingRedis(ctx, got["REDIS_URL"]); err == nil {
		t.Errorf("Redis still answers after stop")
	}
	if err := pingPostgres(ctx, got["DATABASE_URL"]); err == nil {
		t.Errorf("PostgreSQL still answers after stop")
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable",
			"postgres://u:p@h:5432/x?sslmode=disable"},
		{"postgresql://h/", "postgresql://h/x"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=x"},
	}
	for _, tt := range tests {
		got, err := withDatabase(tt.in, "x")
		if err != nil || got != tt.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestFindServerEnvIsAuthoritative(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("REDIS_URL", "redis://:secret@127.0.0.1:"+itoa(port)+"/0")
	_, err = findServer("REDIS_URL", defaultRedisURL, "Redis", pingRedis)
	if err == nil {
		t.Fatal("findServer with an unreachable REDIS_URL succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, "REDIS_URL=") ||
		strings.Contains(msg, "secret") {
		t.Errorf("error %q should name REDIS_URL and hide the password", msg)
	}
}
