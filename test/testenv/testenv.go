// Package testenv gives integration tests real Redis and PostgreSQL servers.
//
// Shared servers are found in this order: the REDIS_URL and DATABASE_URL environment
// variables (authoritative when set: if they do not answer, the test fails); the default
// local ports (redis://127.0.0.1:6379/0 and
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable); and finally throw-away
// servers started by test/services.sh, once per test binary and shared with other test
// binaries until "test/services.sh stop". Nothing is ever skipped: when no server can be
// reached or started, the test fails with a message naming what was tried.
//
// [StartRedis] and [StartPostgres] start private servers owned by one test, for tests that
// stop and restart them.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// Default local servers tried when the environment names none.
const (
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

// Timeouts of the helper's own operations.
const (
	probeTimeout   = 3 * time.Second  // one ping of a candidate server
	opTimeout      = 30 * time.Second // create or drop a database, flush a Redis DB
	scriptTimeout  = 10 * time.Minute // services.sh, which may run apt-get
	startTimeout   = 60 * time.Second // a private server becoming ready
	pollInterval   = 50 * time.Millisecond
	leaseTTL       = 30 * time.Minute // a crashed test's Redis DB lease expires after this
	leaseWait      = 2 * time.Minute  // how long Redis waits for a free logical DB
	leaseKeyPrefix = "phogate:testenv:db:"
)

// resolved caches a lookup for the whole test binary.
type resolved struct {
	once sync.Once
	url  string
	err  error
}

var (
	redisBase    resolved
	postgresBase resolved

	servicesOnce sync.Once
	servicesEnv  map[string]string
	servicesErr  error

	installOnce sync.Once
	installErr  error
)

// RedisURL returns the URL of a reachable Redis server shared by all tests, or fails t.
// Tests that write keys should prefer [Redis], which isolates them.
func RedisURL(t testing.TB) string {
	t.Helper()
	redisBase.once.Do(func() {
		redisBase.url, redisBase.err = findServer("REDIS_URL", defaultRedisURL, "Redis",
			pingRedis)
	})
	if redisBase.err != nil {
		t.Fatalf("testenv: no Redis: %v", redisBase.err)
	}
	return redisBase.url
}

// PostgresURL returns the DSN of a fresh, empty database created for this test on a
// reachable PostgreSQL server, or fails t. The database is dropped when the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	postgresBase.once.Do(func() {
		postgresBase.url, postgresBase.err = findServer("DATABASE_URL", defaultPostgresURL,
			"PostgreSQL", pingPostgres)
	})
	if postgresBase.err != nil {
		t.Fatalf("testenv: no PostgreSQL: %v", postgresBase.err)
	}
	dsn, err := createDatabase(t, postgresBase.url)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dsn
}

// findServer resolves a server in the documented order and returns its URL, or an error
// that names every candidate tried.
func findServer(envVar, fallback, what string, ping func(context.Context, string) error) (
	string, error) {
	if u := os.Getenv(envVar); u != "" {
		if err := probe(u, ping); err != nil {
			return "", fmt.Errorf("%s=%s is set but %s does not answer: %w", envVar,
				redact(u), what, err)
		}
		return u, nil
	}
	defErr := probe(fallback, ping)
	if defErr == nil {
		return fallback, nil
	}
	env, err := startServices()
	if err != nil {
		return "", fmt.Errorf("%s unset; %s at %s: %v; test/services.sh start: %w", envVar,
			what, fallback, defErr, err)
	}
	u := env[envVar]
	if err := probe(u, ping); err != nil {
		return "", fmt.Errorf("%s unset; %s at %s: %v; %s from test/services.sh (%s): %w",
			envVar, what, fallback, defErr, what, redact(u), err)
	}
	return u, nil
}

func probe(u string, ping func(context.Context, string) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	return ping(ctx, u)
}

func pingRedis(ctx context.Context, u string) error {
	opts, err := redis.ParseURL(u)
	if err != nil {
		return fmt.Errorf("parsing Redis URL: %w", err)
	}
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	defer c.Close()
	return c.Ping(ctx).Err()
}

func pingPostgres(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// redact hides a password in a URL for error messages.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Scheme == "" {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// scriptPath returns the path of test/services.sh in the source tree.
func scriptPath() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the testenv source file")
	}
	p := filepath.Join(filepath.Dir(file), "..", "services.sh")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("locating services.sh: %w", err)
	}
	return p, nil
}

// runScript runs test/services.sh with one argument and returns its standard output.
func runScript(arg string, env ...string) ([]byte, error) {
	p, err := scriptPath()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", p, arg)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", p, arg, err, lastLines(stderr.String(), 10))
	}
	return out, nil
}

// startServices runs "services.sh start" once per test binary and returns what it printed.
func startServices() (map[string]string, error) {
	servicesOnce.Do(func() {
		var out []byte
		out, servicesErr = runScript("start")
		if servicesErr == nil {
			servicesEnv = parseEnv(out)
		}
	})
	return servicesEnv, servicesErr
}

// parseEnv reads KEY=VALUE lines.
func parseEnv(out []byte) map[string]string {
	env := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok {
			env[k] = v
		}
	}
	return env
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// randomSuffix returns 12 random hex digits.
func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitUntil polls check until it succeeds, the process exits, or the timeout passes.
func waitUntil(exited <-chan struct{}, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		pctx, pcancel := context.WithTimeout(ctx, probeTimeout)
		err := check(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("server exited: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: %w", startTimeout, err)
		case <-tick.C:
		}
	}
}

// itoa keeps the argument lists below readable.
func itoa(i int) string { return strconv.Itoa(i) }
