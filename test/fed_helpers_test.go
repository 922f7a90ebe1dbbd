package test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"enclave/storage"
)

// Helpers shared by the multi-server federation tests (outage, conflict,
// policy, degraded link, security).

// fedUser registers localpart on n and returns its client.
func fedUser(t *testing.T, n *FedNode, localpart string) *mautrix.Client {
	t.Helper()
	return sessionClient(t, n.URL, Register(t, n.URL, localpart, "pw", false))
}

// fedRebase points cli at n after n was restarted (new client port).
func fedRebase(t *testing.T, cli *mautrix.Client, n *FedNode) *mautrix.Client {
	t.Helper()
	return rebase(t, cli, n.URL)
}

// fedJoin joins cli to room through via's server, failing the test on error.
func fedJoin(t *testing.T, cli *mautrix.Client, room id.RoomID, via *FedNode) {
	t.Helper()
	if _, err := cli.JoinRoom(ctxT(t), room.String(), &mautrix.ReqJoinRoom{Via: []string{via.ServerName}}); err != nil {
		t.Fatalf("%s joining %s via %s: %v", cli.UserID, room, via.ServerName, err)
	}
}

// fedTimeline is the room's whole timeline as cli sees it through
// /messages, oldest first.
func fedTimeline(t *testing.T, cli *mautrix.Client, room id.RoomID) []*event.Event {
	t.Helper()
	return reversed(pageAll(t, cli, room, "", "", mautrix.DirectionBackward, 100))
}

// fedBodies returns the bodies of the m.room.message events with prefix.
func fedBodies(evs []*event.Event, prefix string) []string {
	var out []string
	for _, e := range evs {
		if e.Type == event.EventMessage && strings.HasPrefix(body(e), prefix) {
			out = append(out, body(e))
		}
	}
	return out
}

// fedSeq returns prefix+"%03d" for 0..n-1: the bodies a sender sent, in order.
func fedSeq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

// fedSendSeq sends the bodies from cli, one after the other.
func fedSendSeq(t *testing.T, cli *mautrix.Client, room id.RoomID, bodies []string) {
	t.Helper()
	for _, b := range bodies {
		if _, err := cli.SendText(ctxT(t), room, b); err != nil {
			t.Fatalf("%s sending %q: %v", cli.UserID, b, err)
		}
	}
}

// fedWantExactly asserts got is want: every body once, in order, no gaps.
func fedWantExactly(t *testing.T, what string, got, want []string) {
	t.Helper()
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
		if seen[g] == 2 {
			t.Fatalf("%s: %q delivered twice", what, g)
		}
	}
	for _, w := range want {
		if seen[w] == 0 {
			t.Fatalf("%s: %q missing (%d of %d present)", what, w, len(got), len(want))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d messages, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: out of order at %d: %q, want %q", what, i, got[i], want[i])
		}
	}
}

// fedWaitTimeline polls cli's /messages until every want body (with
// prefix) is present, and returns the matching bodies in timeline order.
func fedWaitTimeline(t *testing.T, cli *mautrix.Client, room id.RoomID, prefix string, want int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got []string
	for {
		got = fedBodies(fedTimeline(t, cli, room), prefix)
		if len(got) >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sees %d of %d %q messages after %v", cli.UserID, len(got), want, prefix, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// fedSyncCollector follows cli's incremental /sync for one room and keeps
// every timeline event in the order sync delivered it.
type fedSyncCollector struct {
	cli    *mautrix.Client
	room   id.RoomID
	filter string
	since  string
	events []*event.Event
}

// fedStartSync takes a sync token now: later events are collected from it.
func fedStartSync(t *testing.T, cli *mautrix.Client, room id.RoomID) *fedSyncCollector {
	t.Helper()
	s := &fedSyncCollector{cli: cli, room: room, filter: timelineFilter(t, cli, 1000)}
	resp, err := cli.SyncRequest(ctxT(t), 0, "", s.filter, false, event.PresenceOnline)
	if err != nil {
		t.Fatalf("initial sync: %v", err)
	}
	s.since = resp.NextBatch
	return s
}

// until syncs until the collected messages with prefix number want; a
// limited (gappy) timeline fails the test: sync must hand every event out.
func (s *fedSyncCollector) until(t *testing.T, prefix string, want int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := fedBodies(s.events, prefix)
		if len(got) >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's sync delivered %d of %d %q messages in %v", s.cli.UserID, len(got), want, prefix, timeout)
		}
		resp, err := s.cli.SyncRequest(ctxT(t), 1000, s.since, s.filter, false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		s.since = resp.NextBatch
		if jr, ok := resp.Rooms.Join[s.room]; ok {
			if jr.Timeline.Limited {
				t.Fatalf("sync timeline limited after %d events (limit 1000): events were skipped", len(s.events))
			}
			s.events = append(s.events, jr.Timeline.Events...)
		}
	}
}

// rebase points the collector at a restarted server, keeping its token.
func (s *fedSyncCollector) rebase(t *testing.T, n *FedNode) {
	s.cli = fedRebase(t, s.cli, n)
}

// fedStateIDs is the room's current state from GET /rooms/{id}/state as
// "type|state_key" → event ID.
func fedStateIDs(t *testing.T, cli *mautrix.Client, room id.RoomID) map[string]string {
	t.Helper()
	r := raw(t, "GET", cli.HomeserverURL.String()+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/state", cli.AccessToken, nil)
	if r.Status != 200 {
		t.Fatalf("GET state of %s: %d %s", room, r.Status, r.Raw)
	}
	var evs []struct {
		Type     string  `json:"type"`
		StateKey *string `json:"state_key"`
		EventID  string  `json:"event_id"`
	}
	if err := json.Unmarshal(r.Raw, &evs); err != nil {
		t.Fatalf("state of %s: %v", room, err)
	}
	out := map[string]string{}
	for _, e := range evs {
		if e.StateKey == nil {
			t.Fatalf("state event %s without state_key", e.EventID)
		}
		out[e.Type+"|"+*e.StateKey] = e.EventID
	}
	return out
}

// fedStateDiff lists the (type, state_key) slots on which a and b differ.
func fedStateDiff(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if b[k] != v {
			out = append(out, fmt.Sprintf("%s: %s vs %s", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s: (none) vs %s", k, v))
		}
	}
	sort.Strings(out)
	return out
}

// fedMembership is a user's membership in the state from cli's view ("" if none).
func fedMembership(t *testing.T, cli *mautrix.Client, room id.RoomID, user string) string {
	t.Helper()
	r := raw(t, "GET", cli.HomeserverURL.String()+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/state/m.room.member/"+url.PathEscape(user), cli.AccessToken, nil)
	if r.Status == 404 {
		return ""
	}
	if r.Status != 200 {
		t.Fatalf("member state of %s: %d %s", user, r.Status, r.Raw)
	}
	m, _ := r.Body["membership"].(string)
	return m
}

// fedQueueEmpty waits until n has nothing queued for dest.
func fedQueueEmpty(t *testing.T, n *FedNode, dest *FedNode, timeout time.Duration) {
	t.Helper()
	waitFor(t, n.ServerName+"'s queue to "+dest.ServerName+" to drain", timeout, func() bool {
		p, e, err := fedQueueDepth(n, dest)
		return err == nil && p+e == 0
	})
}

// fedQueueDepth counts the PDUs and EDUs n has queued for dest.
func fedQueueDepth(n *FedNode, dest *FedNode) (int, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return storage.QueueDepth(ctx, n.DB, dest.ServerName)
}

// --- hand-built events and transactions ---

// fedSigner is a server identity that signs events and requests: a real
// node's key, or a forged one.
type fedSigner struct {
	Name  spec.ServerName
	KeyID gomatrixserverlib.KeyID
	Key   ed25519.PrivateKey
}

func nodeSigner(n *FedNode) fedSigner {
	return fedSigner{Name: spec.ServerName(n.ServerName), KeyID: gomatrixserverlib.KeyID(n.KeyID), Key: n.Key}
}

// fedRoomTip is what a hand-built event in a room needs: the room's
// version, forward extremities, next depth and current state, read from
// the node hosting it.
type fedRoomTip struct {
	Ver   gomatrixserverlib.IRoomVersion
	Prev  []string
	Depth int64
	State map[string]gomatrixserverlib.PDU // "type|state_key" → event
}

func fedTip(t *testing.T, n *FedNode, room id.RoomID) fedRoomTip {
	t.Helper()
	ver, prev, depth, st, err := n.Rooms.LatestForRemote(ctxT(t), room.String())
	if err != nil {
		t.Fatal(err)
	}
	tip := fedRoomTip{Ver: ver, Prev: prev, Depth: depth, State: map[string]gomatrixserverlib.PDU{}}
	for k, e := range st {
		tip.State[k.Type+"|"+k.StateKey] = e
	}
	return tip
}

// authIDs returns the event IDs of the given state slots that exist.
func (tip fedRoomTip) authIDs(slots ...string) []string {
	var out []string
	for _, s := range slots {
		if e := tip.State[s]; e != nil {
			out = append(out, e.EventID())
		}
	}
	return out
}

// fedEvent builds and signs an event as s.
func fedEvent(t *testing.T, s fedSigner, ver gomatrixserverlib.IRoomVersion, p gomatrixserverlib.ProtoEvent) gomatrixserverlib.PDU {
	t.Helper()
	ev, err := ver.NewEventBuilderFromProtoEvent(&p).Build(time.Now(), s.Name, s.KeyID, s.Key)
	if err != nil {
		t.Fatalf("building %s event: %v", p.Type, err)
	}
	return ev
}

// fedSend PUTs a transaction of raw PDUs to dest, signed by s at the
// transport level, and returns the HTTP status and the per-PDU errors.
func fedSend(t *testing.T, c *FedCluster, s fedSigner, dest *FedNode, pdus ...[]byte) (int, map[string]string) {
	t.Helper()
	raws := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		raws[i] = p
	}
	txnID := fmt.Sprintf("t%d", time.Now().UnixNano())
	code, b := fedSignedRequest(t, c, s.Name, s.KeyID, s.Key, spec.ServerName(dest.ServerName), "PUT", "/_matrix/federation/v1/send/"+txnID,
		map[string]any{"origin": s.Name, "origin_server_ts": time.Now().UnixMilli(), "pdus": raws})
	if code != 200 {
		return code, nil
	}
	var resp struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatalf("/send response %s: %v", b, err)
	}
	out := map[string]string{}
	for id, r := range resp.PDUs {
		out[id] = r.Error
	}
	return code, out
}
