package ledger

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// migrationFiles holds the schema of each store as numbered SQL files, applied in order, each
// once. A released file is never edited; a change is a new file.
//
//go:embed migrations
var migrationFiles embed.FS

// migration is one numbered schema step.
type migration struct {
	version int
	sql     string
}

// migrations returns the steps for dialect ("postgres" or "sqlite") in version order.
func migrations(dialect string) ([]migration, error) {
	dir := path.Join("migrations", dialect)
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration %s: name must be NNNN_what.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: v, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// schemaTx is what applying migrations needs from a transaction; each store adapts its
// driver's transaction and SQL dialect to it.
type schemaTx struct {
	exec     func(query string, args ...any) error
	queryInt func(query string) (int, error)
	// createTable creates ledger_schema_migrations in the store's dialect.
	createTable string
	// record inserts one applied version, with the dialect's placeholder.
	record string
}

// applyMigrations applies, inside tx, every step newer than the recorded schema version and
// records each one.
func applyMigrations(tx schemaTx, steps []migration) error {
	if err := tx.exec(tx.createTable); err != nil {
		return fmt.Errorf("creating migrations table: %w", err)
	}
	current, err := tx.queryInt(`SELECT coalesce(max(version), 0) FROM ledger_schema_migrations`)
	if err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	for _, m := range steps {
		if m.version <= current {
			continue
		}
		if err := tx.exec(m.sql); err != nil {
			return fmt.Errorf("migration %d: %w", m.version, err)
		}
		if err := tx.exec(tx.record, m.version); err != nil {
			return fmt.Errorf("recording migration %d: %w", m.version, err)
		}
	}
	return nil
}
