package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"enclave/storage"
	"enclave/storage/storagetest"
)

func putRule(db *storage.DB, id, before, after string) error {
	return db.WithTx(context.Background(), func(tx *storage.Tx) error {
		return storage.PutUserPushRule(context.Background(), tx, "@a:test", "override", id, json.RawMessage(`{"actions":[],"conditions":[]}`), before, after)
	})
}

func ruleOrder(t *testing.T, db *storage.DB) []string {
	t.Helper()
	rows, err := storage.PushRules(context.Background(), db, "@a:test")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		if r.Kind == "override" && r.RuleID[0] != '.' {
			out = append(out, r.RuleID)
		}
	}
	return out
}

func TestPushRuleRows(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, id := range []string{"c", "b", "a"} { // each new rule goes first
			if err := putRule(db, id, "", ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := putRule(db, "d", "", "b"); err != nil {
			t.Fatal(err)
		}
		if err := putRule(db, "e", "a", ""); err != nil {
			t.Fatal(err)
		}
		if got := ruleOrder(t, db); len(got) != 5 || got[0] != "e" || got[1] != "a" || got[2] != "b" || got[3] != "d" || got[4] != "c" {
			t.Fatalf("order %v", got)
		}
		// Updating keeps the place; moving with before works.
		if err := putRule(db, "d", "", ""); err != nil {
			t.Fatal(err)
		}
		if err := putRule(db, "c", "e", ""); err != nil {
			t.Fatal(err)
		}
		if got := ruleOrder(t, db); got[0] != "c" || got[1] != "e" || got[4] != "d" {
			t.Fatalf("order after moves %v", got)
		}
		if err := putRule(db, "x", "nope", ""); !errors.Is(err, storage.ErrRuleNotFound) {
			t.Fatalf("unknown before: %v", err)
		}
		if got := ruleOrder(t, db); len(got) != 5 {
			t.Fatalf("failed put changed rules: %v", got)
		}
		if err := storage.SetPushRuleEnabled(ctx, db, "@a:test", "override", ".m.rule.master", true); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetPushRuleActions(ctx, db, "@a:test", "underride", ".m.rule.message", json.RawMessage(`{"actions":[]}`)); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetPushRuleEnabled(ctx, db, "@a:test", "override", "a", false); err != nil {
			t.Fatal(err)
		}
		many, err := storage.PushRulesMany(ctx, db, []string{"@a:test", "@b:test"})
		if err != nil || len(many["@a:test"]) != 7 || len(many["@b:test"]) != 0 {
			t.Fatalf("many: %v %v", many, err)
		}
		for _, r := range many["@a:test"] {
			switch r.RuleID {
			case ".m.rule.master":
				if r.Enabled == nil || !*r.Enabled || r.Body != nil {
					t.Fatalf("master row %+v", r)
				}
			case ".m.rule.message":
				if r.Enabled != nil || string(r.Body) != `{"actions":[]}` {
					t.Fatalf("message row %+v", r)
				}
			case "a":
				if r.Enabled == nil || *r.Enabled {
					t.Fatalf("a row %+v", r)
				}
			}
		}
		if ok, err := storage.DeletePushRule(ctx, db, "@a:test", "override", "a"); err != nil || !ok {
			t.Fatalf("delete: %v %v", ok, err)
		}
		if ok, _ := storage.DeletePushRule(ctx, db, "@a:test", "override", "a"); ok {
			t.Fatal("deleted twice")
		}
	})
}

func TestPushers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		p := &storage.Pusher{UserID: "@a:test", AppID: "app", PushKey: "key", Kind: "http", AppDisplayName: "App", DeviceDisplayName: "Phone",
			Lang: "en", Data: json.RawMessage(`{"url":"https://push.test/_matrix/push/v1/notify"}`), DeviceID: "DEV", CreatedTS: 1}
		if err := storage.PutPusher(ctx, db, p, false); err != nil {
			t.Fatal(err)
		}
		// Another user takes the same app/pushkey: without append, a's goes.
		q := *p
		q.UserID, q.DeviceID = "@b:test", "BDEV"
		if err := storage.PutPusher(ctx, db, &q, false); err != nil {
			t.Fatal(err)
		}
		if ps, _ := storage.Pushers(ctx, db, "@a:test"); len(ps) != 0 {
			t.Fatalf("a's pusher kept: %+v", ps)
		}
		p.Lang = "de"
		if err := storage.PutPusher(ctx, db, p, true); err != nil {
			t.Fatal(err)
		}
		ps, _ := storage.Pushers(ctx, db, "@a:test")
		bs, _ := storage.Pushers(ctx, db, "@b:test")
		if len(ps) != 1 || ps[0].Lang != "de" || string(ps[0].Data) != `{"url":"https://push.test/_matrix/push/v1/notify"}` || len(bs) != 1 {
			t.Fatalf("append: %+v %+v", ps, bs)
		}
		if err := storage.DeletePusher(ctx, db, "@b:test", "app", "key"); err != nil {
			t.Fatal(err)
		}
		if bs, _ = storage.Pushers(ctx, db, "@b:test"); len(bs) != 0 {
			t.Fatalf("delete: %+v", bs)
		}
		// Deleting the device removes its pushers.
		if err := storage.DeleteDevices(ctx, db, "@a:test", []string{"DEV"}); err != nil {
			t.Fatal(err)
		}
		if ps, _ = storage.Pushers(ctx, db, "@a:test"); len(ps) != 0 {
			t.Fatalf("device cleanup: %+v", ps)
		}
	})
}
