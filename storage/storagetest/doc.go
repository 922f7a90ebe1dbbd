// Package storagetest gives tests a fresh store of each dialect, so every
// storage and integration test runs against SQLite and PostgreSQL alike.
//
// Imports: storage. Called by: tests only.
package storagetest
