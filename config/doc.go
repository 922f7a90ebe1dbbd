// Package config loads, validates and documents the homeserver configuration.
//
// Configuration comes from a single YAML file, layered as
// defaults → YAML → ENCLAVE_* environment variables. Every leaf option has an
// environment variable derived mechanically from its YAML path (see EnvVar),
// so container deployments can override anything without editing the file.
//
// The option set is described once, by the Config struct: yaml tags give the
// paths, doc tags the operator documentation and secret tags what Print must
// mask. The generated enclave.yaml, the env overrides and Print are all
// derived from it by reflection, so adding a field cannot leave one of them
// behind.
//
// Imports: no other Enclave package but internal/glob (it is a leaf, so every component can
// take its settings from it). Called by: the assembly (internal/server),
// cmd/enclave, and the components that read their own section
// (federationapi, mediaapi).
package config
