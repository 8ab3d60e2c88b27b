package cache

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis for the integration tests. The shared Redis is REDIS_URL, or 127.0.0.1:6379 when that
// is unset; a test that needs to stop Redis starts a private redis-server.
//
// TODO: move to the shared test/testenv helper once it exists, so every package starts Redis
// the same way.

const redisStartTimeout = 10 * time.Second

// testRedis returns a client of the shared Redis; it fails the test when Redis is not there.
func testRedis(t testing.TB) *redis.Client {
	t.Helper()
	url := os.Getenv("REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parsing REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s: %v (set REDIS_URL to a running Redis)", url, err)
	}
	return rdb
}

// privateRedis is a redis-server of the test's own, which the test may stop and restart.
type privateRedis struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

// startRedis starts a private redis-server on a free loopback port.
func startRedis(t testing.TB) (*privateRedis, *redis.Client) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	p := &privateRedis{t: t, port: port}
	p.start()
	t.Cleanup(p.stop)
	rdb := redis.NewClient(&redis.Options{
		Addr:       net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		MaxRetries: -1,
	})
	t.Cleanup(func() { rdb.Close() })
	return p, rdb
}

func (p *privateRedis) start() {
	p.t.Helper()
	p.cmd = exec.Command("redis-server", "--port", strconv.Itoa(p.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no")
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("starting redis-server (is it installed?): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	probe := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", p.port)})
	defer probe.Close()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for probe.Ping(ctx).Err() != nil {
		select {
		case <-ctx.Done():
			p.t.Fatalf("redis-server on port %d did not start", p.port)
		case <-tick.C:
		}
	}
}

func (p *privateRedis) stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.cmd = nil
}
