// Package cache holds phogate's response caches. This part is the exact cache: an answer is
// reused only for a request that is the same after normalisation.
//
// One request goes through it in this order (extproc drives it; the package knows nothing of
// Envoy or gRPC):
//
//  1. [BuildKey] turns the request body, the served model and a scope ([Policy.Scope]) into a
//     [Key], or says why the request is not cacheable.
//  2. [ParseCacheControl] reads the client's wishes; unless it skips the lookup,
//     [Cache.LookupFresh] finds a stored [Entry] in memory (l1) or Redis (l2), and
//     [Entry.Replay] turns it into a JSON or SSE body for an immediate response.
//  3. On a miss, [Cache.Begin] collapses identical requests: the leader goes upstream, the
//     others [Flight.Wait] for its answer.
//  4. The answer comes back: [EntryFromJSON] or a [Reassembler] (for SSE) builds the entry,
//     [Storable] checks it is complete, and the leader calls [Flight.Complete] (or
//     [Flight.Abandon]); a request that did not lead uses [Cache.Store].
//
// Redis is optional and never a source of errors: when it is down or slow the cache works
// from memory alone, logs one warning per outage and probes until it recovers.
package cache
