package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phochat/phogate/test/fakeprovider"
	"github.com/phochat/phogate/test/standin"
	"github.com/phochat/phogate/xds"
)

// defaultTestTimeout bounds every end-to-end test.
const defaultTestTimeout = 60 * time.Second

// phogateBinary is built once per test binary from ./cmd/phogate.
var (
	buildOnce   sync.Once
	buildPath   string
	buildErr    error
	buildOutput []byte
)

func phogateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "phogate-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "phogate")
		cmd := exec.Command("go", "build", "-o", buildPath, "github.com/phochat/phogate/cmd/phogate")
		buildOutput, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("building phogate: %v\n%s", buildErr, buildOutput)
	}
	return buildPath
}

// fakeSet is a set of running fake providers keyed by name.
type fakeSet struct {
	servers map[string]*fakeprovider.Server
	addrs   map[string]string
	runners map[string]*fakeprovider.Running
}

// startFakes starts one fake provider per name on a loopback port.
func startFakes(t *testing.T, names ...string) *fakeSet {
	t.Helper()
	fs := &fakeSet{servers: map[string]*fakeprovider.Server{}, addrs: map[string]string{},
		runners: map[string]*fakeprovider.Running{}}
	for _, n := range names {
		s := fakeprovider.New(fakeprovider.Options{Name: n})
		r, err := fakeprovider.Listen(t.Context(), "127.0.0.1:0", s)
		if err != nil {
			t.Fatalf("fake provider %s: %v", n, err)
		}
		t.Cleanup(func() { r.Close() })
		fs.servers[n] = s
		fs.addrs[n] = r.Addr()
		fs.runners[n] = r
	}
	return fs
}

// stack is one gateway (the phogate binary) behind one proxy (Envoy or the stand-in).
type stack struct {
	BaseURL  string // OpenAI base URL through the proxy, ending in /v1
	AdminURL string // phogate's admin server
	Proxy    *standin.Proxy
	logs     *syncBuffer
	gateway  *exec.Cmd
}

// stopGateway stops the phogate process as a crash would, leaving the proxy running on the
// configuration it last received.
func (s *stack) stopGateway(t *testing.T) {
	t.Helper()
	if err := s.gateway.Process.Kill(); err != nil {
		t.Fatalf("killing phogate: %v", err)
	}
	s.gateway.Wait()
}

// stackOptions shape the generated configuration.
type stackOptions struct {
	// Config is the YAML of providers, models and any other section; the listener, gateway
	// and ext_proc sections are generated.
	Config string
	// FailureMode is "closed" unless set.
	FailureMode string
	// Env is added to the gateway's environment.
	Env []string
}

// startStack writes a configuration, starts phogate and the proxy, and waits until a request
// can flow.
func startStack(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	ports := freePorts(t, 4)
	if opts.FailureMode == "" {
		opts.FailureMode = "closed"
	}
	cfg := fmt.Sprintf(`listener:
  address: 127.0.0.1
  port: %d
gateway:
  ext_proc_address: 127.0.0.1:%d
  xds_address: 127.0.0.1:%d
  admin_address: 127.0.0.1:%d
  shutdown_timeout: 2s
ext_proc:
  failure_mode: %s
  message_timeout: 2s
%s%s`, ports[0], ports[1], ports[2], ports[3], opts.FailureMode, opts.Config,
		defaultLedger(t, opts.Config))
	path := filepath.Join(t.TempDir(), "phogate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	s := &stack{
		BaseURL:  fmt.Sprintf("http://127.0.0.1:%d/v1", ports[0]),
		AdminURL: fmt.Sprintf("http://127.0.0.1:%d", ports[3]),
		logs:     &syncBuffer{},
	}
	startGateway(t, path, s, opts.Env)
	waitHTTP(t, s.AdminURL+"/healthz")
	s.startProxy(t, fmt.Sprintf("127.0.0.1:%d", ports[2]))
	return s
}

// testAPIKey is the key the end-to-end clients send. Unless a test configures its own ledger
// section, the generated configuration gives it to an unlimited user.
const testAPIKey = "sk-client"

// defaultLedger is the ledger section added to a configuration without one: the key
// testAPIKey on an unlimited tier, and an embedded store in a temporary folder.
func defaultLedger(t *testing.T, config string) string {
	t.Helper()
	if strings.HasPrefix(config, "ledger:") || strings.Contains(config, "\nledger:") {
		return ""
	}
	return fmt.Sprintf(`
ledger:
  data_dir: %s
  tiers: [{name: unlimited}]
  api_keys: [{key: %s, user: e2e}]
`, t.TempDir(), testAPIKey)
}

func startGateway(t *testing.T, path string, s *stack, env []string) {
	t.Helper()
	cmd := exec.Command(phogateBinary(t), "serve", "-config", path, "-log-level", "debug")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting phogate: %v", err)
	}
	s.gateway = cmd
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }() // returns at once if stopGateway ran
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("phogate log:\n%s", s.logs.String())
		}
	})
}

// startProxy starts Envoy when an envoy binary is on PATH, or the stand-in otherwise.
func (s *stack) startProxy(t *testing.T, xdsAddr string) {
	t.Helper()
	if path, err := exec.LookPath("envoy"); err == nil {
		startEnvoy(t, path, xdsAddr)
		waitHTTPAuth(t, strings.TrimSuffix(s.BaseURL, "/v1")+"/v1/models")
		return
	}
	p, err := standin.Start(t.Context(), standin.Options{
		XDSAddress: xdsAddr, NodeID: "e2e", Cluster: "phogate",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("starting the Envoy stand-in: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("stand-in not ready: %v", err)
	}
	if _, ok := p.ListenerAddr(xds.ListenerName); !ok {
		t.Fatalf("stand-in has no listener %q", xds.ListenerName)
	}
	s.Proxy = p
}

// startEnvoy runs a real Envoy with the shipped bootstrap, pointed at this test's xDS server.
func startEnvoy(t *testing.T, envoyPath, xdsAddr string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "envoy", "bootstrap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(xdsAddr)
	boot := strings.ReplaceAll(string(b), "127.0.0.1", host)
	boot = strings.ReplaceAll(boot, "18000", port)
	boot = strings.ReplaceAll(boot, "9901", fmt.Sprint(freePorts(t, 1)[0]))
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(boot), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(envoyPath, "-c", path, "--log-level", "warn", "--base-id",
		fmt.Sprint(time.Now().UnixNano()%100000))
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting envoy: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("envoy log:\n%s", logs.String())
		}
	})
}

// freePorts reserves n distinct loopback ports and releases them for the caller to bind.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// waitHTTP polls url until it answers 200 or the test deadline passes.
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultTestTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not answer 200: last error %v", url, err)
		case <-tick.C:
		}
	}
}

// syncBuffer collects a child process's output for failure reports.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
