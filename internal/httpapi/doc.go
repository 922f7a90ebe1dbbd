// Package httpapi is the HTTP kit the API components share: the handler
// result (Response) and how it is written, the Matrix error vocabulary,
// bounded JSON body decoding, path variables, request IDs and the
// authenticated Device. It exists so that a component serving HTTP (media,
// admin, audit, federation) needs neither clientapi nor its own copy of
// these helpers; it therefore imports no component.
package httpapi
