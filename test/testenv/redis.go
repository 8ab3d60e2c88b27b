package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// releaseLease deletes a lease key only if this test still holds it.
var releaseLease = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0`)

// Redis returns a client for a logical database of the shared Redis server that this test
// holds alone: it is flushed before use and after the test, and the client is closed when
// the test ends.
//
// Logical databases other than the URL's own are leased through keys in the URL's database,
// so concurrent tests and test binaries never share one. When all are leased, Redis waits
// for one to be released, and fails t after a while.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(RedisURL(t))
	if err != nil {
		t.Fatalf("testenv: parsing Redis URL: %v", err)
	}
	admin := redis.NewClient(opts)
	t.Cleanup(func() { _ = admin.Close() })

	db, err := leaseDB(t, admin, opts.DB)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dbOpts := *opts
	dbOpts.DB = db
	c := redis.NewClient(&dbOpts)
	flush := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		return c.FlushDB(ctx).Err()
	}
	if err := flush(); err != nil {
		_ = c.Close()
		t.Fatalf("testenv: flushing Redis DB %d: %v", db, err)
	}
	t.Cleanup(func() {
		if err := flush(); err != nil {
			t.Errorf("testenv: flushing Redis DB %d: %v", db, err)
		}
		_ = c.Close()
	})
	return c
}

// leaseDB takes a logical database other than skip and registers its release.
func leaseDB(t testing.TB, admin *redis.Client, skip int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), leaseWait)
	defer cancel()
	n := databases(ctx, admin)
	if n < 2 {
		return 0, fmt.Errorf("redis has %d logical databases; Redis(t) needs at least 2", n)
	}
	token := strconv.Itoa(os.Getpid()) + "-" + randomSuffix()
	tick := time.NewTicker(pollInterval * 2)
	defer tick.Stop()
	for {
		for db := range n {
			if db == skip {
				continue
			}
			key := leaseKeyPrefix + strconv.Itoa(db)
			ok, err := admin.SetNX(ctx, key, token, leaseTTL).Result()
			if err != nil {
				return 0, fmt.Errorf("leasing a Redis DB: %w", err)
			}
			if ok {
				t.Cleanup(func() {
					rctx, rcancel := context.WithTimeout(context.Background(), opTimeout)
					defer rcancel()
					_ = releaseLease.Run(rctx, admin, []string{key}, token).Err()
				})
				return db, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("all %d Redis DBs stayed leased for %v (keys %s*)", n-1,
				leaseWait, leaseKeyPrefix)
		case <-tick.C:
		}
	}
}

// databases returns the server's number of logical databases, assuming Redis's default of
// 16 when CONFIG is not allowed.
func databases(ctx context.Context, c *redis.Client) int {
	v, err := c.ConfigGet(ctx, "databases").Result()
	if err != nil {
		return 16
	}
	n, err := strconv.Atoi(v["databases"])
	if err != nil {
		return 16
	}
	return n
}

// StartRedis starts a private redis-server on a free loopback port, owned by this test, and
// returns its URL with functions that stop it (the process is killed, as in a crash) and
// start it again on the same port. The restarted server is empty: it keeps no data. The
// server is stopped when the test ends. stop and restart are safe to call repeatedly and
// from several goroutines.
func StartRedis(t testing.TB) (url string, stop func(), restart func()) {
	t.Helper()
	bin, err := lookBinary("redis-server")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := t.TempDir()
	url = "redis://127.0.0.1:" + itoa(port) + "/0"

	var mu sync.Mutex
	var p *process
	start := func() error {
		cmd := exec.Command(bin, "--port", itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--logfile", filepath.Join(dir, "redis.log"))
		var err error
		if p, err = startProcess(cmd); err != nil {
			return err
		}
		return waitUntil(p.exited, func(ctx context.Context) error { return pingRedis(ctx, url) })
	}
	stop = func() {
		mu.Lock()
		defer mu.Unlock()
		if p != nil {
			p.kill()
			p = nil
		}
	}
	restart = func() {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if p != nil && !p.hasExited() {
			return
		}
		if err := start(); err != nil {
			t.Fatalf("testenv: starting redis-server on port %d: %v (log in %s)", port, err,
				dir)
		}
	}
	t.Cleanup(stop)
	restart()
	return url, stop, restart
}

// process is a child process with a channel closed when it exits.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startProcess(cmd *exec.Cmd) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// lookBinary finds a server binary on PATH, installing the packages with
// "services.sh install" once when it is missing.
func lookBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	installOnce.Do(func() { _, installErr = runScript("install") })
	if installErr != nil {
		return "", fmt.Errorf("%s not on PATH and installing it failed: %w", name, installErr)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not on PATH even after test/services.sh install: %w", name, err)
	}
	return p, nil
}
