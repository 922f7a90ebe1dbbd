// Package test holds Enclave's integration tests: they start the real
// server (in-process through internal/server, or the built binary) on a
// loopback port with a real store of each dialect, and drive it with real
// client libraries (mautrix-go; matrix-js-sdk under test/node).
//
// Imports: anything (it tests the whole process). Called by: `make test`.
package test
