// Package httpapi is the HTTP kit the API components share: the handler
// result (Response) and how it is written, the Matrix error vocabulary,
// bounded JSON body decoding, path variables, request IDs, the
// authenticated Device and Routes (the client listener as the components
// that mount on it see it). It exists so that a component serving HTTP
// needs neither clientapi nor its own copy of these helpers.
//
// Imports: no component (gorilla/mux, logrus and the internal/perm
// vocabulary only). Called by:
// clientapi, federationapi, adminapi, auditapi/endpoints, mediaapi,
// internal/rbac and the assembly.
package httpapi
