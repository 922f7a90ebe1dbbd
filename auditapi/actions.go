package auditapi

// Action names. Components record with these so that auditors can filter
// on stable names; a trailing '*' in a filter matches a prefix
// (e.g. "room.*").
const (
	// Accounts and sessions.
	ActionLogin          = "account.login"      // outcome failure carries details.reason
	ActionLoginLockout   = "account.lockout"    // failed logins locked the account: details.failures, lockout_seconds
	ActionLogout         = "account.logout"     // details.all for /logout/all
	ActionRegister       = "account.register"   // details.kind: user, admin (shared secret), admin_api
	ActionPasswordChange = "account.password"   // details.by_admin when reset through the admin API
	ActionDeactivate     = "account.deactivate" // details.erase
	ActionReactivate     = "account.reactivate" // admin API
	ActionAccountModify  = "account.modify"     // admin API: details.fields changed
	ActionDeviceAdd      = "device.add"         // target: device ID
	ActionDeviceRemove   = "device.remove"      // target: device ID
	ActionDeviceUpdate   = "device.update"      // rename
	ActionCrossSigning   = "keys.cross_signing" // upload of cross-signing keys: details.keys (types only)
	ActionSignatures     = "keys.signatures"    // signature uploads: details.count
	ActionKeyBackup      = "keys.backup"        // backup version create/update/delete: details.op, version
	ActionKeyBackupKeys  = "keys.backup_keys"   // room-key upload/delete to a backup: details.op, count
	ActionDeviceKeys     = "keys.device_upload" // device keys published: target device ID
	ActionRoleChange     = "rbac.role_change"   // target: user; details.from, details.to
	ActionRoleGrant      = "rbac.role_grant"    // a watchful grant waiting for a second admin: details.op requested, approved or cancelled
	ActionAccessDenied   = "rbac.denied"        // details.permission, details.route
	ActionRegTokenChange = "admin.registration_token"

	// Rooms (recorded by the room event hook, local and remote events).
	ActionRoomCreate  = "room.create"
	ActionInvite      = "room.invite"
	ActionJoin        = "room.join"
	ActionLeave       = "room.leave"
	ActionKick        = "room.kick"
	ActionBan         = "room.ban"
	ActionUnban       = "room.unban"
	ActionKnock       = "room.knock"
	ActionPowerLevels = "room.power_levels"
	ActionRoomState   = "room.state"
	ActionMessage     = "room.message" // details: event_id, type, size, content_sha256 (never plaintext)
	ActionRedaction   = "room.redaction"

	// Media.
	ActionMediaUpload   = "media.upload"   // target: mxc URI; details: size, content_type, sha256
	ActionMediaDownload = "media.download" // target: mxc URI
	ActionMediaAdmin    = "media.admin"    // quarantine / delete
	ActionMediaPreview  = "media.preview"  // a URL preview asked for: target: the host; details.result (fetched, cached, refused, failed)

	// Administration.
	ActionAdminCall    = "admin.call"             // every admin API request: details.method, route, status
	ActionRoomBlock    = "admin.room_block"       // details.blocked
	ActionRoomPurge    = "admin.room_purge"       // details.events
	ActionLegalHold    = "admin.legal_hold"       // details.scope, held
	ActionServerNotice = "admin.server_notice"    // target: user
	ActionReportDelete = "admin.report_delete"    // target: report ID; details.event_id, reporter
	ActionRetention    = "retention.purge"        // details.events, before_ts
	ActionRoomExport   = "admin.room_export"      // target: room
	ActionLoginAsUser  = "admin.login_as_user"    // target: user; details.device_id, valid_until_ms
	ActionShadowBan    = "admin.shadow_ban"       // target: user; details.banned
	ActionPurgeHistory = "admin.purge_history"    // target: room; details.events, before_ts, delete_local_events, purge_id
	ActionRoomAdmin    = "admin.make_room_admin"  // target: user; details.event_id
	ActionFedReset     = "admin.federation_reset" // target: destination
	// An import of another platform's export (enclave import): target the
	// import ID; details: platform, file, file_sha256, file_size,
	// operator, op (start, finish), counts on finish.
	ActionImport = "admin.import"

	// Federation.
	ActionFedTxnIn  = "federation.txn_in"  // actor server: origin; details: txn_id, pdus, edus
	ActionFedTxnOut = "federation.txn_out" // target: destination; details: txn_id, pdus, edus
	ActionFedRefuse = "federation.refused" // actor server: origin refused by policy; details.reason

	// The audit trail itself and the server.
	ActionAuditExport = "audit.export"
	ActionAuditVerify = "audit.verify"
	ActionCheckpoint  = "audit.checkpoint"

	// Server keys (every operation on them, from the server or the CLI).
	ActionSigningKey  = "keys.server_signing_key" // federation key generated or replaced: target key ID; details.op
	ActionAuditKey    = "keys.audit_signing_key"  // audit key generated: target key ID; details.op
	ActionKEKRotate   = "keys.media_kek_rotate"   // media KEK rotation: details.from, to, rewrapped, resumed (outcome failure on error)
	ActionConfigLoad  = "server.config_reload"
	ActionServerStart = "server.start"
	ActionServerStop  = "server.stop"
)

// ActionAppServiceLoad: an appservice registration was loaded at start
// (actor: the server and the appservice id; target: its sender user).
const ActionAppServiceLoad = "appservice.load"

// ActionAppServiceAddress: an appservice's as_token was used from an
// address it had not used since start (details: appservice, ip).
const ActionAppServiceAddress = "appservice.new_address"

// ActionAppServiceQueueDropped: queued events of an appservice were
// dropped undelivered, past app_services.queue_max_events or
// queue_max_age (details: appservice, dropped, registered, the limits).
const ActionAppServiceQueueDropped = "appservice.queue_dropped"

// ActionAppServiceNetworkRoom: an appservice published a room in (or
// withdrew it from) one of its networks' room directories (details:
// appservice, network_id, visibility).
const ActionAppServiceNetworkRoom = "appservice.network_room"
