// Command enclave is the Enclave homeserver: one static binary that serves,
// generates keys and manages users.
//
//	enclave serve [--data DIR]            run the homeserver
//	enclave config [--data DIR]           print the effective config
//	enclave generate-keys [--data DIR]    create the signing key (--force replaces it)
//	enclave create-user [--data DIR] [--admin] USER [PASSWORD]
//	enclave appservice register --id ID --sender LOCALPART [--url URL] [--users REGEX]
//	enclave import slack|mattermost [--dry-run] [--users-map CSV] EXPORT
//	enclave version
//
// Imports: the assembly (internal/server) to serve, and config, storage,
// auditapi, appservice, importer (and its format packages), internal/rbac,
// internal/sealing and mediaapi for the
// maintenance subcommands. Called by: operators, and the integration tests
// that start the binary.
package main
