package federationapi

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"enclave/config"
)

// acceptAll is a key ring stand-in that accepts every signature, so the
// fuzzer reaches the code past signature checks.
type acceptAll struct{}

func (acceptAll) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	return make([]gomatrixserverlib.VerifyJSONResult, len(reqs)), nil
}

// FuzzSendTransaction feeds arbitrary /send bodies through the transaction
// parser and the per-PDU checks (room version lookup, event parsing with
// content hashes, sender policy, signature checks, EDU dispatch). It must
// never panic, must honour the limits, and must answer every PDU it could
// name exactly once.
func FuzzSendTransaction(f *testing.F) {
	k := newTestKey(f, "remote.test")
	ev := k.event(f, "!room:remote.test", "@alice:remote.test", "hi")
	seed := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(seed(map[string]any{"origin": "remote.test", "origin_server_ts": 1, "pdus": []json.RawMessage{ev.JSON()}}))
	f.Add(seed(map[string]any{"pdus": []json.RawMessage{ev.JSON(), ev.JSON()}, "edus": []any{
		map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": "!room:remote.test", "user_id": "@alice:remote.test", "typing": true}},
		map[string]any{"edu_type": "m.receipt", "content": "not an object"},
	}}))
	f.Add([]byte(`{"pdus":[{"room_id":"!v1:remote.test","event_id":"$a:remote.test","type":"m.room.message","sender":"@a:remote.test","content":{},"prev_events":[],"auth_events":[],"depth":1,"origin_server_ts":1,"hashes":{"sha256":"x"}}]}`))
	f.Add([]byte(`{"pdus":[{"room_id":"!room:remote.test","content":{"body":1e400}}],"edus":null}`))
	f.Add([]byte(`{"pdus":[{"room_id":"!unknown:x"}],"edus":[{"edu_type":"m.typing"}]}`))
	f.Add([]byte(`{"pdus":null}`))
	f.Add([]byte(`{"pdus":[{}]`))
	f.Add([]byte(`[]`))

	rooms := &fakeRooms{versions: map[string]gomatrixserverlib.RoomVersion{
		"!room:remote.test": gomatrixserverlib.RoomVersionV10,
		"!v1:remote.test":   gomatrixserverlib.RoomVersionV1,
		"!v12:remote.test":  gomatrixserverlib.RoomVersionV12,
	}}
	pol := newPolicy("self.test", config.FederationConfig{Enabled: true, DeniedServers: []string{"denied.test"}})
	fed := &inbound{serverName: "self.test", rs: rooms, keys: acceptAll{}, metrics: newMetrics(), pol: func() *policy { return pol },
		edus: map[string]EDUHandler{"m.typing": func(context.Context, spec.ServerName, json.RawMessage) error { return nil }}}

	f.Fuzz(func(t *testing.T, body []byte) {
		txn, err := parseTransaction(body)
		if err != nil {
			return
		}
		if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
			t.Fatalf("limits not enforced: %d PDUs, %d EDUs", len(txn.PDUs), len(txn.EDUs))
		}
		rooms.got = nil
		resp, err := fed.processTransaction(context.Background(), "remote.test", txn)
		if err != nil {
			t.Fatalf("processing failed: %v", err)
		}
		if len(resp.PDUs) > len(txn.PDUs) {
			t.Fatalf("%d results for %d PDUs", len(resp.PDUs), len(txn.PDUs))
		}
		for _, p := range rooms.got {
			if _, ok := resp.PDUs[p.EventID()]; !ok {
				t.Fatalf("accepted event %s has no result", p.EventID())
			}
		}
		if _, err := json.Marshal(resp); err != nil {
			t.Fatalf("response does not encode: %v", err)
		}
	})
}
