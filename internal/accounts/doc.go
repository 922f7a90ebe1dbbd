// Package accounts holds the account rules every way of creating or
// changing an account must share (registration, login, the admin API):
// how passwords are hashed and verified, how long they may be, and which
// localparts a new user may take.
//
// Imports: no component (x/crypto/argon2 only). Called by: clientapi and
// adminapi.
package accounts
