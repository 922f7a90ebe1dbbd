package fedpeer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Config says who the peer is and whom it trusts.
type Config struct {
	// ServerName is "IP:PORT"; the peer listens there.
	ServerName string
	// Cert is the peer's TLS certificate for IP.
	Cert tls.Certificate
	// RootCAs verifies the servers the peer calls.
	RootCAs *x509.CertPool
}

// Transaction is one /send the peer accepted.
type Transaction struct {
	ID     string
	Origin spec.ServerName
	PDUs   []json.RawMessage
	EDUs   []gomatrixserverlib.EDU
}

// Peer is a running test homeserver.
type Peer struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	Key        ed25519.PrivateKey

	t      testing.TB
	srv    *http.Server
	client *http.Client

	mu         sync.Mutex
	rooms      map[string]*Room
	txns       []Transaction
	remoteKeys map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey
	// Reject, when set, decides the per-PDU error the peer answers for a
	// PDU it is sent ("" accepts it): a test can play a peer that refuses.
	Reject func(pdu json.RawMessage) string
	// MissingHorizon, when set, limits /get_missing_events to events at
	// most that many below the room's newest (by depth): a peer that
	// cannot give the whole of a long gap, so the server under test keeps
	// a hole in its timeline. /backfill still serves everything.
	MissingHorizon int64
	// LegacyMedia, when set, is media the peer serves as a server without
	// authenticated media does: only the legacy, unauthenticated
	// /_matrix/media/v3/download (the federation media paths are 404
	// M_UNRECOGNIZED), keyed by media ID. Set it before the peer is used;
	// SetLegacyMedia changes it later.
	LegacyMedia map[string][]byte
	// legacyQueries is the query string of each legacy download served.
	legacyQueries []string
	// Withhold names events the peer never serves (/event, /state,
	// /get_missing_events) though they are in its rooms: a peer whose
	// answers cite an event it cannot give. Set it before the peer is used.
	Withhold map[string]bool
	// missingReqs is every /get_missing_events request body, in order.
	missingReqs []MissingRequest
}

// MissingRequest is one /get_missing_events request the peer answered.
type MissingRequest struct {
	Earliest []string `json:"earliest_events"`
	Latest   []string `json:"latest_events"`
	Limit    int      `json:"limit"`
}

// MissingRequests returns the /get_missing_events requests so far.
func (p *Peer) MissingRequests() []MissingRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]MissingRequest(nil), p.missingReqs...)
}

// SetLegacyMedia sets (nil: removes) one legacy media item.
func (p *Peer) SetLegacyMedia(mediaID string, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.LegacyMedia == nil {
		p.LegacyMedia = map[string][]byte{}
	}
	if b == nil {
		delete(p.LegacyMedia, mediaID)
	} else {
		p.LegacyMedia[mediaID] = b
	}
}

// LegacyMediaQueries returns the query string of every legacy media
// download the peer was asked for, in order.
func (p *Peer) LegacyMediaQueries() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.legacyQueries...)
}

// New starts a peer; it stops when the test ends.
func New(t testing.TB, cfg Config) *Peer {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{
		ServerName: spec.ServerName(cfg.ServerName),
		KeyID:      "ed25519:peer",
		Key:        key,
		t:          t,
		rooms:      map[string]*Room{},
		remoteKeys: map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey{},
		client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS13}},
		},
	}
	l, err := net.Listen("tcp", cfg.ServerName)
	if err != nil {
		t.Fatalf("fedpeer listening on %s: %v", cfg.ServerName, err)
	}
	p.srv = &http.Server{
		Handler:           p.mux(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cfg.Cert}, MinVersion: tls.VersionTLS13},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = p.srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.srv.Shutdown(ctx)
	})
	return p
}

// UserID is the ID of localpart on the peer.
func (p *Peer) UserID(localpart string) string {
	return "@" + localpart + ":" + string(p.ServerName)
}

// Room is the room the peer joined as roomID (nil if none).
func (p *Peer) Room(roomID string) *Room {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rooms[roomID]
}

// Do sends a request signed by the peer to dest and returns the status
// and body. body is marshalled as JSON unless it is nil.
func (p *Peer) Do(dest spec.ServerName, method, path string, body any) (int, []byte, error) {
	fr := fclient.NewFederationRequest(method, p.ServerName, dest, path)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			return 0, nil, err
		}
	}
	if err := fr.Sign(p.ServerName, p.KeyID, p.Key); err != nil {
		return 0, nil, err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return 0, nil, err
	}
	req.URL.Scheme = "https"
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// MustDo is Do that fails the test unless the answer is want.
func (p *Peer) MustDo(t testing.TB, want int, dest spec.ServerName, method, path string, body any) []byte {
	t.Helper()
	code, b, err := p.Do(dest, method, path, body)
	if err != nil {
		t.Fatalf("fedpeer %s %s: %v", method, path, err)
	}
	if code != want {
		t.Fatalf("fedpeer %s %s: %d %s, want %d", method, path, code, b, want)
	}
	return b
}

// MakeMembership asks dest for a membership template (make_join,
// make_leave or make_knock, by membership) for userID on the peer and
// returns it signed by the peer, with the room version dest chose.
func (p *Peer) MakeMembership(t testing.TB, dest spec.ServerName, membership, roomID, userID string) (gomatrixserverlib.PDU, gomatrixserverlib.IRoomVersion) {
	t.Helper()
	q := url.Values{}
	for v := range gomatrixserverlib.RoomVersions() {
		q.Add("ver", string(v))
	}
	b := p.MustDo(t, http.StatusOK, dest, http.MethodGet,
		"/_matrix/federation/v1/make_"+membership+"/"+url.PathEscape(roomID)+"/"+url.PathEscape(userID)+"?"+q.Encode(), nil)
	var mj fclient.RespMakeJoin
	if err := json.Unmarshal(b, &mj); err != nil {
		t.Fatalf("make_%s answer %s: %v", membership, b, err)
	}
	ver, err := gomatrixserverlib.GetRoomVersion(mj.RoomVersion)
	if err != nil {
		t.Fatalf("make_%s room version: %v", membership, err)
	}
	proto := mj.JoinEvent
	proto.SenderID, proto.RoomID = userID, roomID
	ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), p.ServerName, p.KeyID, p.Key)
	if err != nil {
		t.Fatalf("building the %s: %v", membership, err)
	}
	return ev, ver
}

// Join joins userID (on the peer) to roomID through dest with
// make_join/send_join v2 and returns the room as the peer now knows it.
func (p *Peer) Join(t testing.TB, dest spec.ServerName, roomID, userID string) *Room {
	t.Helper()
	join, ver := p.MakeMembership(t, dest, "join", roomID, userID)
	b := p.MustDo(t, http.StatusOK, dest, http.MethodPut,
		"/_matrix/federation/v2/send_join/"+url.PathEscape(roomID)+"/"+url.PathEscape(join.EventID()), json.RawMessage(join.JSON()))
	var sj struct {
		State     []json.RawMessage `json:"state"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	if err := json.Unmarshal(b, &sj); err != nil {
		t.Fatalf("send_join answer: %v", err)
	}
	r := &Room{ID: roomID, Version: ver, p: p, events: map[string]gomatrixserverlib.PDU{},
		state: map[string]gomatrixserverlib.PDU{}, forward: map[string]bool{}}
	for _, raw := range append(sj.AuthChain, sj.State...) {
		ev, err := ver.NewEventFromUntrustedJSON(raw)
		if err != nil {
			t.Fatalf("send_join event: %v", err)
		}
		r.events[ev.EventID()] = ev
	}
	for _, raw := range sj.State {
		ev, _ := ver.NewEventFromUntrustedJSON(raw)
		r.state[slot(ev)] = ev
	}
	for _, prev := range join.PrevEventIDs() {
		r.forward[prev] = true
	}
	r.Add(join)
	p.mu.Lock()
	p.rooms[roomID] = r
	p.mu.Unlock()
	return r
}

// SendPDUs sends one transaction of pdus to dest and returns the per-PDU
// errors ("" for accepted). Accepted PDUs join the peer's room.
func (p *Peer) SendPDUs(t testing.TB, dest spec.ServerName, pdus ...gomatrixserverlib.PDU) map[string]string {
	t.Helper()
	raws := make([]json.RawMessage, len(pdus))
	for i, e := range pdus {
		raws[i] = e.JSON()
	}
	res := p.SendRaw(t, dest, raws, nil)
	for _, e := range pdus {
		if msg, ok := res[e.EventID()]; ok && msg == "" {
			if r := p.Room(e.RoomID().String()); r != nil {
				r.Add(e)
			}
		}
	}
	return res
}

// SendRaw sends one transaction of raw PDUs and EDUs to dest and returns
// the per-PDU errors; the transaction must be answered 200.
func (p *Peer) SendRaw(t testing.TB, dest spec.ServerName, pdus []json.RawMessage, edus []gomatrixserverlib.EDU) map[string]string {
	t.Helper()
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	body := map[string]any{"origin": p.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus}
	if len(edus) > 0 {
		body["edus"] = edus
	}
	b := p.MustDo(t, http.StatusOK, dest, http.MethodPut, fmt.Sprintf("/_matrix/federation/v1/send/fp%d", time.Now().UnixNano()), body)
	var resp struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatalf("/send answer %s: %v", b, err)
	}
	out := map[string]string{}
	for id, r := range resp.PDUs {
		out[id] = r.Error
	}
	return out
}

// Transactions is every transaction the peer was sent so far.
func (p *Peer) Transactions() []Transaction {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Transaction(nil), p.txns...)
}

// ReceivedPDUs is every PDU the peer was sent so far, in arrival order,
// duplicates included.
func (p *Peer) ReceivedPDUs() []json.RawMessage {
	var out []json.RawMessage
	for _, txn := range p.Transactions() {
		out = append(out, txn.PDUs...)
	}
	return out
}

// Parsed is every PDU the peer was sent so far in rooms it knows, parsed,
// in arrival order.
func (p *Peer) Parsed() []gomatrixserverlib.PDU {
	var out []gomatrixserverlib.PDU
	for _, raw := range p.ReceivedPDUs() {
		if ev := p.parse(raw); ev != nil {
			out = append(out, ev)
		}
	}
	return out
}

// WaitPDU waits until the peer was sent a PDU in a room it knows for which
// match is true, and returns it.
func (p *Peer) WaitPDU(t testing.TB, timeout time.Duration, what string, match func(gomatrixserverlib.PDU) bool) gomatrixserverlib.PDU {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, raw := range p.ReceivedPDUs() {
			if ev := p.parse(raw); ev != nil && match(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fedpeer: no PDU %s after %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// parse reads a PDU of a room the peer knows (nil otherwise).
func (p *Peer) parse(raw json.RawMessage) gomatrixserverlib.PDU {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if json.Unmarshal(raw, &head) != nil {
		return nil
	}
	r := p.Room(head.RoomID)
	if r == nil {
		return nil
	}
	ev, err := r.Version.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil
	}
	return ev
}

// VerifyJSONs checks signatures with the keys each server publishes at
// /_matrix/key/v2/server (fetched once): the peer trusts a server's own
// answer, which is enough over the test PKI.
func (p *Peer) VerifyJSONs(ctx context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		keys, err := p.keysOf(ctx, r.ServerName)
		if err != nil {
			out[i].Error = err
			continue
		}
		out[i].Error = errors.New("no valid signature from " + string(r.ServerName))
		for id, pub := range keys {
			if gomatrixserverlib.VerifyJSON(string(r.ServerName), id, pub, r.Message) == nil {
				out[i].Error = nil
				break
			}
		}
	}
	return out, nil
}

func (p *Peer) keysOf(ctx context.Context, server spec.ServerName) (map[gomatrixserverlib.KeyID]ed25519.PublicKey, error) {
	p.mu.Lock()
	k := p.remoteKeys[server]
	p.mu.Unlock()
	if k != nil {
		return k, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+string(server)+"/_matrix/key/v2/server", nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var keys gomatrixserverlib.ServerKeyFields
	if err := json.NewDecoder(resp.Body).Decode(&keys); err != nil {
		return nil, err
	}
	k = map[gomatrixserverlib.KeyID]ed25519.PublicKey{}
	for id, vk := range keys.VerifyKeys {
		k[id] = ed25519.PublicKey(vk.Key)
	}
	p.mu.Lock()
	p.remoteKeys[server] = k
	p.mu.Unlock()
	return k, nil
}

// --- serving ---

func (p *Peer) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /_matrix/key/v2/server", p.serveKeys)
	m.HandleFunc("PUT /_matrix/federation/v1/send/{txnID}", p.signed(p.serveSend))
	m.HandleFunc("GET /_matrix/federation/v1/event/{eventID}", p.signed(p.serveEvent))
	m.HandleFunc("GET /_matrix/federation/v1/state_ids/{roomID}", p.signed(p.serveStateIDs))
	m.HandleFunc("GET /_matrix/federation/v1/state/{roomID}", p.signed(p.serveState))
	m.HandleFunc("GET /_matrix/federation/v1/backfill/{roomID}", p.signed(p.serveBackfill))
	m.HandleFunc("POST /_matrix/federation/v1/get_missing_events/{roomID}", p.signed(p.serveMissing))
	m.HandleFunc("GET /_matrix/federation/v1/make_join/{roomID}/{userID}", p.signed(p.serveMakeJoin))
	m.HandleFunc("PUT /_matrix/federation/v2/send_join/{roomID}/{eventID}", p.signed(p.serveSendJoin))
	m.HandleFunc("GET /_matrix/media/v3/download/{server}/{mediaID}", p.serveLegacyMedia)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_UNRECOGNIZED", "error": "not served by fedpeer"})
	})
	return m
}

func (p *Peer) serveLegacyMedia(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.legacyQueries = append(p.legacyQueries, r.URL.RawQuery)
	b, ok := p.LegacyMedia[r.PathValue("mediaID")]
	p.mu.Unlock()
	if !ok || spec.ServerName(r.PathValue("server")) != p.ServerName {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "no such media"})
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Disposition", `inline; filename="legacy.txt"`)
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *Peer) serveKeys(w http.ResponseWriter, _ *http.Request) {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName:    p.ServerName,
		VerifyKeys:    map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{p.KeyID: {Key: spec.Base64Bytes(p.Key.Public().(ed25519.PublicKey))}},
		ValidUntilTS:  spec.AsTimestamp(time.Now().Add(24 * time.Hour)),
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
	}
	b, _ := json.Marshal(fields)
	signed, err := gomatrixserverlib.SignJSON(string(p.ServerName), p.KeyID, p.Key, b)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"errcode": "M_UNKNOWN", "error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(signed)
}

// signed checks the X-Matrix signature before h runs.
func (p *Peer) signed(h func(w http.ResponseWriter, r *http.Request, fr *fclient.FederationRequest)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fr, errResp := fclient.VerifyHTTPRequest(r, time.Now(), p.ServerName, nil, p)
		if fr == nil {
			writeJSON(w, errResp.Code, map[string]string{"errcode": "M_UNAUTHORIZED", "error": fmt.Sprint(errResp.JSON)})
			return
		}
		h(w, r, fr)
	}
}

func (p *Peer) serveSend(w http.ResponseWriter, r *http.Request, fr *fclient.FederationRequest) {
	var body struct {
		PDUs []json.RawMessage       `json:"pdus"`
		EDUs []gomatrixserverlib.EDU `json:"edus"`
	}
	if err := json.Unmarshal(fr.Content(), &body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"errcode": "M_NOT_JSON", "error": err.Error()})
		return
	}
	results := map[string]any{}
	for _, raw := range body.PDUs {
		ev := p.parse(raw)
		if ev == nil {
			continue
		}
		res := map[string]string{}
		if p.Reject != nil {
			if msg := p.Reject(raw); msg != "" {
				res["error"] = msg
			}
		}
		if res["error"] == "" {
			p.Room(ev.RoomID().String()).Add(ev)
		}
		results[ev.EventID()] = res
	}
	p.mu.Lock()
	p.txns = append(p.txns, Transaction{ID: r.PathValue("txnID"), Origin: fr.Origin(), PDUs: body.PDUs, EDUs: body.EDUs})
	p.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"pdus": results})
}

func (p *Peer) findEvent(eventID string) gomatrixserverlib.PDU {
	p.mu.Lock()
	rooms := make([]*Room, 0, len(p.rooms))
	for _, r := range p.rooms {
		rooms = append(rooms, r)
	}
	p.mu.Unlock()
	if p.Withhold[eventID] {
		return nil
	}
	for _, r := range rooms {
		if ev := r.Event(eventID); ev != nil {
			return ev
		}
	}
	return nil
}

func (p *Peer) pduAnswer(evs []gomatrixserverlib.PDU) map[string]any {
	raws := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		raws = append(raws, e.JSON())
	}
	return map[string]any{"origin": p.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": raws}
}

func (p *Peer) serveEvent(w http.ResponseWriter, r *http.Request, _ *fclient.FederationRequest) {
	ev := p.findEvent(r.PathValue("eventID"))
	if ev == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown event"})
		return
	}
	writeJSON(w, http.StatusOK, p.pduAnswer([]gomatrixserverlib.PDU{ev}))
}

// serveStateIDs answers with the peer's current state (the peer does not
// keep state per event) and every event it has as the auth chain.
func (p *Peer) serveStateIDs(w http.ResponseWriter, r *http.Request, _ *fclient.FederationRequest) {
	room := p.Room(r.PathValue("roomID"))
	if room == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown room"})
		return
	}
	room.mu.Lock()
	defer room.mu.Unlock()
	state, auth := []string{}, []string{}
	for _, e := range room.state {
		state = append(state, e.EventID())
	}
	for id, e := range room.events {
		if e.StateKey() != nil {
			auth = append(auth, id)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"pdu_ids": state, "auth_chain_ids": auth})
}

// serveState answers /state with the room's current state (like
// serveStateIDs, whatever the event asked about) and every state event
// the peer holds as the auth chain.
func (p *Peer) serveState(w http.ResponseWriter, r *http.Request, _ *fclient.FederationRequest) {
	room := p.Room(r.PathValue("roomID"))
	if room == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown room"})
		return
	}
	room.mu.Lock()
	defer room.mu.Unlock()
	state, auth := []json.RawMessage{}, []json.RawMessage{}
	for _, e := range room.state {
		if !p.Withhold[e.EventID()] {
			state = append(state, e.JSON())
		}
	}
	for _, e := range room.events {
		if e.StateKey() != nil && !p.Withhold[e.EventID()] {
			auth = append(auth, e.JSON())
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"pdus": state, "auth_chain": auth})
}

func (p *Peer) serveBackfill(w http.ResponseWriter, r *http.Request, _ *fclient.FederationRequest) {
	room := p.Room(r.PathValue("roomID"))
	if room == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown room"})
		return
	}
	limit := 100
	_, _ = fmt.Sscan(r.URL.Query().Get("limit"), &limit)
	writeJSON(w, http.StatusOK, p.pduAnswer(room.walkBack(r.URL.Query()["v"], nil, limit, true)))
}

func (p *Peer) serveMissing(w http.ResponseWriter, r *http.Request, fr *fclient.FederationRequest) {
	room := p.Room(r.PathValue("roomID"))
	if room == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "unknown room"})
		return
	}
	var req struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
	}
	if err := json.NewDecoder(bytes.NewReader(fr.Content())).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"errcode": "M_NOT_JSON", "error": err.Error()})
		return
	}
	p.mu.Lock()
	p.missingReqs = append(p.missingReqs, MissingRequest{Earliest: req.Earliest, Latest: req.Latest, Limit: req.Limit})
	p.mu.Unlock()
	if req.Limit <= 0 {
		req.Limit = 10
	}
	evs := room.walkBack(req.Latest, req.Earliest, req.Limit, false)
	if p.MissingHorizon > 0 {
		room.mu.Lock()
		floor := room.depth - p.MissingHorizon
		room.mu.Unlock()
		kept := evs[:0]
		for _, e := range evs {
			if e.Depth() >= floor && !p.Withhold[e.EventID()] {
				kept = append(kept, e)
			}
		}
		evs = kept
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": p.pduAnswer(evs)["pdus"]})
}
