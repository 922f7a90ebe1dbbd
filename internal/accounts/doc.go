// Package accounts holds the account rules every way of creating or
// changing an account must share (registration, the admin API, the CLI):
// how passwords are hashed and verified, how long they may be, and which
// localparts a new user may take. It imports no component.
package accounts
