// Package server assembles the components of one Enclave process — store,
// room server, sync stream, client API — from a config, and runs their
// listeners. cmd/enclave and the integration tests both start servers
// through it, so tests exercise exactly what operators run.
//
// Imports: every component — it is the only package that does: build
// (assembly.go) creates them as fields of Server in one commented order,
// and checks at compile time that each meets the interfaces of the others
// it is given. Called by: cmd/enclave and the integration tests.
package server
