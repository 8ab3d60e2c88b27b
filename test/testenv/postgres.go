package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// databasePrefix starts the name of every database PostgresURL creates.
const databasePrefix = "phogate_test_"

// createDatabase creates a fresh database on the server at base, registers its removal, and
// returns its DSN.
func createDatabase(t testing.TB, base string) (string, error) {
	name := databasePrefix + randomSuffix()
	if err := adminExec(base, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("creating database %s: %w", name, err)
	}
	t.Cleanup(func() {
		// WITH (FORCE) ends sessions a test left open (PostgreSQL 13 and later).
		if err := adminExec(base, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: dropping database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(base, name)
	if err != nil {
		return "", err
	}
	return dsn, nil
}

// adminExec runs one statement on the server's maintenance connection.
func adminExec(dsn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns dsn naming database name instead of its own. Both URL and
// keyword/value DSNs are accepted; in the latter a later dbname overrides an earlier one.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parsing DATABASE_URL: %w", err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	return dsn + " dbname=" + name, nil
}

// StartPostgres starts a private PostgreSQL cluster on a free loopback port, owned by this
// test, and returns the DSN of its postgres database with functions that stop it (fast
// shutdown) and start it again on the same port with its data kept. The cluster lives in a
// temporary directory and is stopped when the test ends. When the test runs as root the
// cluster runs as the postgres user. stop and restart are safe to call repeatedly and from
// several goroutines.
func StartPostgres(t testing.TB) (dsn string, stop func(), restart func()) {
	t.Helper()
	bindir, err := postgresBinDir()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c := &cluster{bindir: bindir, port: port, dsn: "postgres://postgres@127.0.0.1:" +
		itoa(port) + "/postgres?sslmode=disable"}
	if err := c.init(t.TempDir()); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	stop = func() {
		if err := c.stop("fast"); err != nil {
			t.Errorf("testenv: stopping PostgreSQL on port %d: %v", port, err)
		}
	}
	restart = func() {
		t.Helper()
		if err := c.start(); err != nil {
			t.Fatalf("testenv: starting PostgreSQL on port %d: %v (log %s)", port, err, c.log)
		}
	}
	t.Cleanup(func() {
		if err := c.stop("immediate"); err != nil {
			t.Errorf("testenv: stopping PostgreSQL on port %d: %v", port, err)
		}
	})
	restart()
	return c.dsn, stop, restart
}

// cluster is a private PostgreSQL cluster driven with initdb and pg_ctl.
type cluster struct {
	bindir string
	port   int
	dsn    string
	data   string
	log    string

	mu      sync.Mutex
	running bool
}

// init creates the cluster under dir. As root, the directory is handed to the postgres user
// and the test's temporary directories are made searchable so that user can reach it.
func (c *cluster) init(dir string) error {
	base := filepath.Join(dir, "pg")
	if err := os.Mkdir(base, 0o700); err != nil {
		return fmt.Errorf("creating cluster directory: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := handToPostgres(base); err != nil {
			return err
		}
	}
	c.data, c.log = filepath.Join(base, "data"), filepath.Join(base, "postgres.log")
	out, err := asPostgres(filepath.Join(c.bindir, "initdb"), "-D", c.data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w: %s", err, lastLines(string(out), 10))
	}
	return nil
}

// handToPostgres gives base to the postgres user and lets it traverse base's parents up to
// the system temporary directory.
func handToPostgres(base string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("running PostgreSQL as root needs a postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(base, uid, gid); err != nil {
		return fmt.Errorf("handing %s to postgres: %w", base, err)
	}
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Dir(base); strings.HasPrefix(d, tmp+string(filepath.Separator)); d =
		filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("checking %s: %w", d, err)
		}
		if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
			return fmt.Errorf("making %s searchable: %w", d, err)
		}
	}
	return nil
}

func (c *cluster) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return nil
	}
	opts := "-p " + itoa(c.port) + " -c listen_addresses=127.0.0.1" +
		" -c unix_socket_directories='' -c fsync=off"
	out, err := asPostgres(filepath.Join(c.bindir, "pg_ctl"), "-D", c.data, "-l", c.log,
		"-w", "-t", strconv.Itoa(int(startTimeout.Seconds())), "-o", opts,
		"start").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl start: %w: %s", err, lastLines(string(out), 10))
	}
	c.running = true
	return waitUntil(nil, func(ctx context.Context) error { return pingPostgres(ctx, c.dsn) })
}

func (c *cluster) stop(mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	out, err := asPostgres(filepath.Join(c.bindir, "pg_ctl"), "-D", c.data, "-m", mode, "-w",
		"stop").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, lastLines(string(out), 10))
	}
	c.running = false
	return nil
}

// asPostgres returns a command run as the postgres user when the test runs as root, since
// PostgreSQL refuses to run as root.
func asPostgres(name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

// postgresBinDir finds the newest directory holding initdb and pg_ctl, installing
// PostgreSQL with "services.sh install" once when none exists.
func postgresBinDir() (string, error) {
	if d := findPostgresBinDir(); d != "" {
		return d, nil
	}
	installOnce.Do(func() { _, installErr = runScript("install") })
	if installErr != nil {
		return "", fmt.Errorf("PostgreSQL binaries not found and installing failed: %w",
			installErr)
	}
	if d := findPostgresBinDir(); d != "" {
		return d, nil
	}
	return "", errors.New("initdb and pg_ctl not found under /usr/lib/postgresql/*/bin or " +
		"on PATH, even after test/services.sh install")
}

func findPostgresBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) < pgVersion(dirs[j]) })
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		dirs = append([]string{filepath.Dir(p)}, dirs...)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if isExec(filepath.Join(dirs[i], "initdb")) && isExec(filepath.Join(dirs[i], "pg_ctl")) {
			return dirs[i]
		}
	}
	return ""
}

// pgVersion reads the major version from /usr/lib/postgresql/<version>/bin.
func pgVersion(bindir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(bindir)), 64)
	return v
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0
}
