package storage

// MigrationKey names a schema step in the ledger.
type MigrationKey struct {
	Component string
	Version   int
}

// MigrationKeys lists every schema step, in run order, for the migration
// tests.
func MigrationKeys() []MigrationKey {
	out := make([]MigrationKey, len(migrations))
	for i, m := range migrations {
		out[i] = MigrationKey{m.Component, m.Version}
	}
	return out
}
