// Package syncapi is the sync stream: it turns the store's ordered stream
// into /sync responses and wakes long-polling clients the moment something
// they may see is stored.
//
// Imports: storage (the stream and its read caches), roomserver (the
// output events it subscribes to and the state it filters by), the
// notifier (unread counts), internal/lru. Called by: the client API, which
// serves /sync and sliding sync through a *Syncer, and the assembly, which
// builds it (syncapi.Options) and hands it events.
package syncapi
