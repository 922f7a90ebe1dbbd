package appservice

import (
	"encoding/json"
	"reflect"
	"testing"

	"enclave/storage"
)

// A transaction lays each kind out under the keys bridges read: the
// stable and the MSC2409 ephemeral key, MSC2409's to-device key, merged
// device lists and the latest key counts per device (MSC3202).
func TestTransactionBody(t *testing.T) {
	rows := []storage.AppServiceQueued{
		{Kind: storage.AppServiceKindEvent, JSON: []byte(`{"event_id":"$1"}`)},
		{Kind: storage.AppServiceKindEphemeral, JSON: []byte(`{"type":"m.typing"}`)},
		{Kind: storage.AppServiceKindToDevice, JSON: []byte(`{"type":"m.room.encrypted","to_user_id":"@b:x","to_device_id":"D"}`)},
		{Kind: storage.AppServiceKindDeviceLists, JSON: []byte(`{"changed":["@z:x","@a:x"]}`)},
		{Kind: storage.AppServiceKindDeviceLists, JSON: []byte(`{"changed":["@a:x"]}`)},
		{Kind: storage.AppServiceKindKeyCounts, JSON: []byte(`{"user_id":"@b:x","device_id":"D","counts":{"signed_curve25519":5},"fallback":[]}`)},
		{Kind: storage.AppServiceKindKeyCounts, JSON: []byte(`{"user_id":"@b:x","device_id":"D","counts":{"signed_curve25519":4},"fallback":["signed_curve25519"]}`)},
		{Kind: storage.AppServiceKindEvent, JSON: []byte(`{"event_id":"$2"}`)},
	}
	var got map[string]any
	if err := json.Unmarshal(transactionBody(rows), &got); err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	_ = json.Unmarshal([]byte(`{
		"events": [{"event_id":"$1"},{"event_id":"$2"}],
		"ephemeral": [{"type":"m.typing"}],
		"de.sorunome.msc2409.ephemeral": [{"type":"m.typing"}],
		"de.sorunome.msc2409.to_device": [{"type":"m.room.encrypted","to_user_id":"@b:x","to_device_id":"D"}],
		"org.matrix.msc3202.device_lists": {"changed":["@a:x","@z:x"],"left":[]},
		"org.matrix.msc3202.device_one_time_keys_count": {"@b:x":{"D":{"signed_curve25519":4}}},
		"org.matrix.msc3202.device_unused_fallback_key_types": {"@b:x":{"D":["signed_curve25519"]}}
	}`), &want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("transaction\n got %v\nwant %v", got, want)
	}
	// Room events only: the plain shape, no extra keys.
	if b := string(transactionBody(rows[:1])); b != `{"events":[{"event_id":"$1"}]}` {
		t.Fatalf("events-only transaction: %s", b)
	}
}
