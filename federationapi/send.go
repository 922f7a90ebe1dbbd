package federationapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/roomserver"
	"enclave/storage"
)

// Transaction limits from the spec.
const (
	maxTxnPDUs  = 50
	maxTxnEDUs  = 100
	maxPDUBytes = 65536
	maxTxnIDLen = 255
	// inboundTxnRetention is how long processed transaction IDs are
	// remembered; senders retry a transaction for far less.
	inboundTxnRetention = 24 * time.Hour
)

// inboundTxn is a parsed /send body.
type inboundTxn struct {
	Origin         spec.ServerName         `json:"origin"`
	OriginServerTS spec.Timestamp          `json:"origin_server_ts"`
	PDUs           []json.RawMessage       `json:"pdus"`
	EDUs           []gomatrixserverlib.EDU `json:"edus"`
}

// PDUResult is one PDU's outcome in a /send response.
type PDUResult struct {
	Error string `json:"error,omitempty"`
}

// SendResponse is the /send response body.
type SendResponse struct {
	PDUs map[string]PDUResult `json:"pdus"`
}

// errTxnShape is a /send body that is not a transaction.
var errTxnShape = errors.New("malformed transaction")

// parseTransaction checks a /send body's shape and the spec's limits. A
// missing or null pdus list is read as empty (EDU-only transactions).
func parseTransaction(body []byte) (*inboundTxn, error) {
	var txn inboundTxn
	if err := json.Unmarshal(body, &txn); err != nil {
		return nil, fmt.Errorf("%w: %v", errTxnShape, err)
	}
	if len(txn.PDUs) > maxTxnPDUs {
		return nil, fmt.Errorf("%w: %d PDUs, at most %d allowed", errTxnShape, len(txn.PDUs), maxTxnPDUs)
	}
	if len(txn.EDUs) > maxTxnEDUs {
		return nil, fmt.Errorf("%w: %d EDUs, at most %d allowed", errTxnShape, len(txn.EDUs), maxTxnEDUs)
	}
	for i, p := range txn.PDUs {
		if t := bytes.TrimSpace(p); len(t) == 0 || t[0] != '{' {
			return nil, fmt.Errorf("%w: pdus[%d] is not an object", errTxnShape, i)
		}
	}
	return &txn, nil
}

// sendTransaction is PUT /_matrix/federation/v1/send/{txnId}. One origin's
// transactions are processed one at a time, in arrival order; a retried
// transaction ID gets the stored response without being processed again.
func (f *inbound) sendTransaction(r *http.Request, origin spec.ServerName, body []byte) httpapi.Response {
	txnID := mux.Vars(r)["txnId"]
	if txnID == "" || len(txnID) > maxTxnIDLen {
		return httpapi.InvalidParam("invalid transaction ID")
	}
	unlock := f.lockOrigin(origin)
	defer unlock()
	ctx := r.Context()
	if stored, err := storage.GetInboundTxn(ctx, f.db, string(origin), txnID); err == nil {
		return httpapi.JSON(http.StatusOK, []byte(stored))
	} else if !errors.Is(err, storage.ErrNotFound) {
		return httpapi.InternalError(r, err)
	}
	txn, err := parseTransaction(body)
	if err != nil {
		return httpapi.BadJSON("%v", err)
	}
	if txn.Origin != "" && txn.Origin != origin {
		return httpapi.Forbidden("transaction origin %q does not match the signing server %q", txn.Origin, origin)
	}
	resp, err := f.processTransaction(ctx, origin, txn)
	if err != nil {
		// Nothing is recorded: the sender retries the same transaction.
		return httpapi.InternalError(r, err)
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	if err := storage.PutInboundTxn(ctx, f.db, string(origin), txnID, b, time.Now().UnixMilli()); err != nil {
		return httpapi.InternalError(r, err)
	}
	if f.txnsStored.Add(1)%500 == 1 {
		go f.pruneInboundTxns()
	}
	return httpapi.JSON(http.StatusOK, []byte(b))
}

func (f *inbound) pruneInboundTxns() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := storage.PruneInboundTxns(ctx, f.db, time.Now().Add(-inboundTxnRetention).UnixMilli()); err != nil {
		logrus.WithError(err).Warn("federation: pruning inbound transactions")
	}
}

// lockOrigin serialises one origin's transactions.
func (f *inbound) lockOrigin(origin spec.ServerName) func() {
	m, _ := f.originLocks.LoadOrStore(origin, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// processTransaction checks every PDU (room known, size, format, the
// content hash (a mismatch is redacted), the sender's server permitted by
// the policy and the room's ACL, its signatures valid), hands the good ones to the room server and dispatches
// the EDUs. An error means the transaction could not be processed at all
// (e.g. the store is down) and should be retried.
func (f *inbound) processTransaction(ctx context.Context, origin spec.ServerName, txn *inboundTxn) (*SendResponse, error) {
	resp := &SendResponse{PDUs: map[string]PDUResult{}}
	seen := map[string]bool{}
	acls := map[string]roomserver.StateMap{} // room → its current state, read once per transaction
	var pdus []gomatrixserverlib.PDU
	for _, raw := range txn.PDUs {
		ev, id, err := f.checkPDU(ctx, raw)
		if errors.Is(err, errStore) {
			return nil, err
		}
		if id == "" || seen[id] {
			if err != nil {
				logrus.WithError(err).WithField("origin", origin).Debug("federation: dropped an unidentifiable PDU")
			}
			continue
		}
		seen[id] = true
		if err == nil {
			err = f.checkPDUACL(ctx, origin, ev, acls)
		}
		if errors.Is(err, errStore) {
			return nil, err
		}
		if err != nil {
			resp.PDUs[id] = PDUResult{Error: err.Error()}
			f.metrics.inboundPDUs.WithLabelValues("rejected").Inc()
			continue
		}
		pdus = append(pdus, ev)
	}
	if len(pdus) > 0 {
		results := f.rs.InputRemoteEvents(ctx, origin, pdus)
		for _, ev := range pdus {
			if err := results[ev.EventID()]; err != nil {
				resp.PDUs[ev.EventID()] = PDUResult{Error: err.Error()}
				f.metrics.inboundPDUs.WithLabelValues("rejected").Inc()
			} else {
				resp.PDUs[ev.EventID()] = PDUResult{}
				f.metrics.inboundPDUs.WithLabelValues("accepted").Inc()
			}
		}
	}
	for _, edu := range txn.EDUs {
		f.dispatchEDU(ctx, origin, edu)
	}
	return resp, nil
}

// checkPDUACL applies the room's m.room.server_acl to a PDU: neither the
// server that sent the transaction nor the event's sender's server may be
// denied (the second keeps a denied server's events out when another
// server relays them).
func (f *inbound) checkPDUACL(ctx context.Context, origin spec.ServerName, ev gomatrixserverlib.PDU, states map[string]roomserver.StateMap) error {
	roomID := ev.RoomID().String()
	st, ok := states[roomID]
	if !ok {
		var err error
		if st, err = f.rs.CurrentState(ctx, roomID); errors.Is(err, roomserver.ErrRoomNotFound) {
			return fmt.Errorf("unknown room %s", roomID)
		} else if err != nil {
			return fmt.Errorf("%w: %v", errStore, err)
		}
		states[roomID] = st
	}
	if !aclAllows(st, origin) {
		return fmt.Errorf("%s is denied by the server ACL of %s", origin, roomID)
	}
	if d := userServer(string(ev.SenderID())); d != "" && d != origin && !aclAllows(st, d) {
		return fmt.Errorf("events from %s are denied by the server ACL of %s", d, roomID)
	}
	return nil
}

// errStore marks failures that are ours, not the PDU's.
var errStore = errors.New("store unavailable")

// checkPDU parses and verifies one PDU. id is its event ID, or a best
// guess when it cannot be parsed ("" if there is none to give).
func (f *inbound) checkPDU(ctx context.Context, raw json.RawMessage) (gomatrixserverlib.PDU, string, error) {
	var hdr struct {
		RoomID  string `json:"room_id"`
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return nil, "", fmt.Errorf("malformed PDU: %v", err)
	}
	if hdr.RoomID == "" {
		return nil, guessEventID(raw, hdr.EventID, ""), errors.New("PDU has no room_id")
	}
	ver, err := f.rs.RoomVersion(ctx, hdr.RoomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return nil, guessEventID(raw, hdr.EventID, ""), fmt.Errorf("unknown room %s", hdr.RoomID)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", errStore, err)
	}
	if len(raw) > maxPDUBytes {
		return nil, guessEventID(raw, hdr.EventID, ver), fmt.Errorf("PDU exceeds %d bytes", maxPDUBytes)
	}
	ev, err := parsePDU(raw, ver)
	if err != nil {
		return nil, guessEventID(raw, hdr.EventID, ver), err
	}
	// An event whose content hash does not match comes back from the
	// parser redacted; the spec has it processed further in that form
	// (its signatures cover only the redacted form), not refused.
	if err := f.checkPDUSender(ctx, ev); err != nil {
		return nil, ev.EventID(), err
	}
	return ev, ev.EventID(), nil
}

// checkPDUSender requires the sender's server to be one we federate with
// (transactions may relay other servers' events) and the event to carry
// valid signatures from it (and from any other server the room version
// requires).
func (f *inbound) checkPDUSender(ctx context.Context, ev gomatrixserverlib.PDU) error {
	sender, err := spec.NewUserID(string(ev.SenderID()), true)
	if err != nil {
		return fmt.Errorf("invalid sender: %v", err)
	}
	if d := sender.Domain(); d != f.serverName && !f.pol().allowedPeer(d) {
		return fmt.Errorf("events from %s are not accepted by this server's federation policy", d)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, f.keys, roomserver.UserIDForSender); err != nil {
		return fmt.Errorf("signature check failed: %v", err)
	}
	return nil
}

// parsePDU parses untrusted event JSON for a room version: canonical JSON,
// field checks, the 64 KiB limit, and the content hash (an event whose
// hash does not match comes back redacted, per the spec). A panic in the
// parser is returned as an error, never allowed to take the server down.
func parsePDU(raw []byte, ver gomatrixserverlib.RoomVersion) (ev gomatrixserverlib.PDU, err error) {
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			ev, err = nil, fmt.Errorf("unparseable PDU: %v", p)
		}
	}()
	ev, err = impl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid PDU: %v", err)
	}
	return ev, nil
}

// guessEventID names a PDU that was refused before it could be fully
// parsed: its event_id field (room versions 1 and 2), else its reference
// hash under the room's version, or a current default when the room is
// unknown.
func guessEventID(raw []byte, eventID string, ver gomatrixserverlib.RoomVersion) string {
	if eventID != "" {
		return eventID
	}
	if ver == "" {
		ver = gomatrixserverlib.RoomVersionV10
	}
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return ""
	}
	id := ""
	func() {
		defer func() { _ = recover() }()
		if ev, err := impl.NewEventFromTrustedJSON(raw, false); err == nil {
			id = ev.EventID()
		}
	}()
	return id
}

// dispatchEDU hands an EDU to its handler in the EDU table; unknown types are
// ignored, as the spec asks, and handler failures stay with the EDU.
func (f *inbound) dispatchEDU(ctx context.Context, origin spec.ServerName, edu gomatrixserverlib.EDU) {
	f.edusMu.RLock()
	h := f.edus[edu.Type]
	f.edusMu.RUnlock()
	if h == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			logrus.WithField("edu_type", edu.Type).WithField("origin", origin).Errorf("federation: EDU handler panicked: %v", p)
		}
	}()
	if err := h(ctx, origin, json.RawMessage(edu.Content)); err != nil {
		logrus.WithError(err).WithField("edu_type", edu.Type).WithField("origin", origin).Debug("federation: EDU not processed")
	}
}
