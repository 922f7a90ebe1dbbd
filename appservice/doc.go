// Package appservice is the Application Service API: the bridges and bots
// an operator registers with a YAML file (registration.go), how their
// as_token authenticates and masquerades as their users (the client API
// asks through the small interface it declares), and the persistent,
// strictly ordered queue of transactions pushed to each bridge's url
// (queue.go), filled inside each event's own transaction so nothing a
// client was acknowledged can be lost. The same queue carries ephemeral
// events and, for encrypting bridges, their devices' to-device messages,
// device lists and key counts (ephemeral.go: MSC2409, MSC3202).
//
// The server calls a bridge only because the operator configured its url:
// nothing here discovers or contacts anything else.
//
// Imports: roomserver (the transactional hook's types), syncapi (the
// client event format), storage, auditapi and internal/*. Called by: the
// assembly only, which hands it to the client API as an interface.
package appservice
