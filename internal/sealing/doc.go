// Package sealing is the envelope encryption behind media at rest: every
// object is sealed with AES-256-GCM under its own random data key, and
// each data key is stored wrapped (AES-256-GCM again) under the agency's
// key-encryption key (KEK). Rotating the KEK re-wraps the small data keys
// and never touches the sealed objects.
//
// Imports: the standard library and golang.org/x/crypto only. Called by:
// mediaapi (sealing objects) and cmd/enclave (KEK generation and rotation).
package sealing
