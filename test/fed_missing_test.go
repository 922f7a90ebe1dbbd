package test

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"

	"enclave/storage"
)

// TestFederationMissingEventBadJSON (the suite's
// TestOutboundFederationIgnoresMissingEventWithBadJSONForRoomVersion6):
// in a version 6 room the peer sends an event whose prev event has a
// float in its content (canonical JSON forbids it from version 6 on).
// A asks /get_missing_events between its latest event and the new one,
// gets the bad event, skips it, and so does not take the event that
// cites it into the room either: a third event citing that one makes A
// ask /get_missing_events again from the same earliest event. The bad
// event is not stored; the room is not wedged (alice's next message
// reaches the peer and the peer's next well-formed event reaches alice).
func TestFederationMissingEventBadJSON(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			c.StartAll()
			a := c.Nodes[0]
			aName := spec.ServerName(a.ServerName)
			alice := fedUser(t, a, "alice")
			created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "6"})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID
			charlie := peer.UserID("charlie")
			r := peer.Join(t, aName, room.String(), charlie)
			latest := r.Forward()

			// The bad event, built under version 5's rules (which allow floats).
			content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": "Message 1", "bad_val": 1.1})
			proto := gomatrixserverlib.ProtoEvent{SenderID: charlie, RoomID: room.String(), Type: "m.room.message", Content: content, PrevEvents: latest}
			proto.AuthEvents = r.AuthFor(t, proto)
			pd := r.Build(t, gomatrixserverlib.ProtoEvent{SenderID: charlie, Type: "m.room.message", Content: spec.RawJSON(`{}`)}).Depth()
			proto.Depth = pd
			v5 := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV5)
			bad, err := v5.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), peer.ServerName, peer.KeyID, peer.Key)
			if err != nil {
				t.Fatal(err)
			}
			r.Add(bad)
			msg2 := r.Message(t, charlie, "Message 2")
			r.Add(msg2)
			res := peer.SendPDUs(t, aName, msg2)
			if _, ok := res[msg2.EventID()]; !ok {
				t.Fatalf("/send answered no result for the event: %v", res)
			}
			reqs := peer.MissingRequests()
			if len(reqs) == 0 || !slices.Equal(reqs[0].Earliest, latest) || !slices.Equal(reqs[0].Latest, []string{msg2.EventID()}) {
				t.Fatalf("first /get_missing_events: %+v, want earliest %v latest [%s]", reqs, latest, msg2.EventID())
			}
			for _, id := range []string{bad.EventID(), msg2.EventID()} {
				if got := raw(t, "GET", a.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/event/"+url.PathEscape(id), alice.AccessToken, nil); got.Status != 404 {
					t.Fatalf("A serves %s (%d), want it kept out of the room", id, got.Status)
				}
			}

			msg3 := r.Message(t, charlie, "Message 3")
			r.Add(msg3)
			n := len(peer.MissingRequests())
			peer.SendPDUs(t, aName, msg3)
			reqs = peer.MissingRequests()
			if len(reqs) <= n || !slices.Equal(reqs[n].Earliest, latest) || !slices.Equal(reqs[n].Latest, []string{msg3.EventID()}) {
				t.Fatalf("second /get_missing_events: %+v, want earliest %v latest [%s]", reqs[n:], latest, msg3.EventID())
			}

			// Not wedged: both directions still work.
			if _, err := alice.SendText(ctxT(t), room, "alice after the bad event"); err != nil {
				t.Fatal(err)
			}
			peer.WaitPDU(t, 20*time.Second, "alice's message", func(e gomatrixserverlib.PDU) bool {
				var c struct{ Body string }
				_ = json.Unmarshal(e.Content(), &c)
				return c.Body == "alice after the bad event"
			})
			good := r.Build(t, gomatrixserverlib.ProtoEvent{SenderID: charlie, Type: "m.room.message", PrevEvents: fedAliceTip(t, peer, room.String()),
				Content: spec.RawJSON(`{"msgtype":"m.text","body":"charlie well formed"}`)})
			if res := peer.SendPDUs(t, aName, good); res[good.EventID()] != "" {
				t.Fatalf("A refused a well-formed event after the bad one: %v", res)
			}
			waitForBody(t, alice, room, "charlie well formed", 15*time.Second)
		})
	}
}

// fedAliceTip is the newest event the peer received from A in room.
func fedAliceTip(t *testing.T, peer interface {
	Parsed() []gomatrixserverlib.PDU
}, roomID string) []string {
	t.Helper()
	evs := peer.Parsed()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].RoomID().String() == roomID {
			return []string{evs[i].EventID()}
		}
	}
	t.Fatal("the peer has no event of the room from A")
	return nil
}

// TestFederationCorruptedAuthChain (the suite's TestCorruptedAuthChain):
// charlie on the peer changes his display name five times (A→E, each
// member event authorised by the one before); the peer cannot serve B.
// A message citing E as charlie's member event reaches A, which fetches
// the auth events it lacks one by one (/event) and, B being unavailable,
// refuses the message instead of taking C, D or E in on the strength of
// an in-memory chain: none of them is stored, charlie's member event on
// A carries none of their names, and the room still works.
func TestFederationCorruptedAuthChain(t *testing.T) {
	for _, d := range []storage.Dialect{storage.SQLite, storage.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			c := NewFedCluster(t, d)
			peer := c.AddPeer()
			peer.MissingHorizon = 1
			c.StartAll()
			a := c.Nodes[0]
			aName := spec.ServerName(a.ServerName)
			alice := fedUser(t, a, "alice")
			created, err := alice.CreateRoom(ctxT(t), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID
			charlie := peer.UserID("charlie")
			r := peer.Join(t, aName, room.String(), charlie)
			base := []string{r.State("m.room.create", "").EventID(), r.State("m.room.power_levels", "").EventID(), r.State("m.room.join_rules", "").EventID()}
			var names []gomatrixserverlib.PDU
			prevMember := r.State("m.room.member", charlie).EventID()
			for _, n := range []string{"A", "B", "C", "D", "E"} {
				content, _ := json.Marshal(map[string]string{"membership": "join", "displayname": n})
				ev := r.Build(t, gomatrixserverlib.ProtoEvent{SenderID: charlie, Type: "m.room.member", StateKey: &charlie, Content: content,
					AuthEvents: append(append([]string{}, base...), prevMember)})
				r.Add(ev)
				names = append(names, ev)
				prevMember = ev.EventID()
			}
			peer.Withhold = map[string]bool{names[1].EventID(): true}
			for _, body := range []string{"for /state", "for /get_missing_events"} {
				r.Add(r.Message(t, charlie, body))
			}
			last := r.Message(t, charlie, "for /send")
			r.Add(last)
			if res := peer.SendPDUs(t, aName, last); res[last.EventID()] == "" {
				t.Fatalf("A accepted an event whose auth chain lacks B: %v", res)
			}
			for _, ev := range append(names[1:], last) {
				if got := raw(t, "GET", a.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(room.String())+"/event/"+url.PathEscape(ev.EventID()), alice.AccessToken, nil); got.Status != 404 {
					t.Fatalf("A serves %s (%d): it hangs on the missing B", ev.EventID(), got.Status)
				}
			}
			content := fedMemberContent(t, alice, room, charlie)
			if content == nil {
				t.Fatal("A lost charlie's member event")
			}
			if dn, _ := content["displayname"].(string); dn == "C" || dn == "D" || dn == "E" || dn == "B" {
				t.Fatalf("charlie's member event on A is %q: an event hanging on the missing B was taken into the state", dn)
			}
			if _, err := alice.SendText(ctxT(t), room, "alice still sends"); err != nil {
				t.Fatalf("the room is wedged on A: %v", err)
			}
			peer.WaitPDU(t, 20*time.Second, "alice's message", func(e gomatrixserverlib.PDU) bool {
				var c struct{ Body string }
				_ = json.Unmarshal(e.Content(), &c)
				return c.Body == "alice still sends"
			})
		})
	}
}
