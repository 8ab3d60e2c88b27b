// Package ledger accounts for what each caller of the gateway uses and may use: prices and
// cost, usage rows and their stores (PostgreSQL or embedded SQLite), the asynchronous
// [Writer] with its crash-safe spool, caller identity from API keys or a trusted header,
// monthly budgets with reservations arbitrated across replicas by Redis, and rate limits.
//
// The package knows nothing of Envoy or gRPC: it takes and returns plain Go values. A request
// goes through it in this order:
//
//  1. [Ledger.Identify] turns request headers into a [Principal], or [ErrUnauthenticated].
//  2. [Ledger.Admit] checks rate limits ([ErrRateLimited]) and reserves the estimated cost
//     against the user's monthly budget ([ErrBudgetExceeded]).
//  3. [Ledger.Settle] replaces the reservation with the real cost and queues one usage [Row].
//
// Money is exact: [USD] counts nano-dollars in an int64, so sums never drift.
//
// # Guarantees and limits
//
//   - Usage rows: a row accepted by [Writer.Record] is stored exactly once, across store
//     outages and restarts, except when the process dies while the row is still in the
//     in-memory queue (at most the queue size, each row at most the batch delay old). See
//     [Writer].
//   - Budgets: with Redis, replicas share one budget per user and month; a user can exceed
//     it only by the difference between a request's estimated and real cost. Without Redis,
//     PostgreSQL arbitrates (any number of replicas); the embedded SQLite store arbitrates
//     within its one process, so embedded mode supports a single replica only. When a
//     month's Redis keys are first created, the spent total is read from stored usage rows;
//     rows still queued in some replica's Writer at that moment are not counted.
//   - Reservations unsettled for the reservation TTL (a crashed replica) are released.
//   - Identity: API-key lookups, found or not, are cached per process for the cache TTL; a
//     new or revoked key takes up to that long to be seen.
//   - Rate limits: per-minute GCRA buckets in Redis when configured, otherwise per process
//     (so N replicas without Redis allow N times the limit).
package ledger
