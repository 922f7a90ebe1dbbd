// Package invitefilter evaluates a user's invite permission config
// (MSC4155): which users and servers may invite them, which invites are
// refused (block) and which are accepted but never shown (ignore). The
// invitee's server decides, so local and federated invites get the same
// answer.
//
// Imports: no component (internal/glob for the patterns). Called by: roomserver (local
// and createRoom invites, the federation /invite handler through it),
// syncapi (hiding ignored invites) and clientapi (the capability).
package invitefilter
