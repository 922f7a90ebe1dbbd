// Package pushrules holds the Matrix push rule model: the spec's default
// rule set, merging it with a user's own rules and overrides, validating
// rules sent by clients, and evaluating a rule set against an event. It is
// pure (no store, no network) so the notifier, the client API and /sync
// share one definition.
//
// Imports: internal/lru only. Called by: the notifier and the client API
// (push-rule endpoints).
package pushrules
