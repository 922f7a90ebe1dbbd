// Package lru is a small, bounded, concurrency-safe least-recently-used
// cache for immutable values (events, state snapshots).
//
// Imports: the standard library only. Called by: storage, roomserver,
// syncapi, clientapi and the push-rule notifier, for their read caches.
package lru
