package appservice

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	r, err := Parse([]byte(`id: telegram
url: null
as_token: secret-as
hs_token: secret-hs
sender_localpart: telegrambot
rate_limited: false
namespaces:
  users:
  - regex: '@telegram_.*:example\.org'
    exclusive: true
  aliases:
  - regex: '#telegram_.*:example\.org'
    exclusive: false
de.sorunome.msc2409.push_ephemeral: true
receive_ephemeral: true
org.matrix.msc3202: true
io.element.msc4190: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if r.PushURL() != "" || r.IsRateLimited() || !r.PushEphemeral || !r.ReceiveEphemeral || !r.PushesEphemeral() || !r.PushesCrypto() || !r.MSC4190 {
		t.Fatalf("parsed %+v", r)
	}
	if !r.ExclusiveUser("@telegram_1:example.org") || r.ExclusiveUser("@alice:example.org") || r.ExclusiveAlias("#telegram_x:example.org") || !r.OwnsAlias("#telegram_x:example.org") {
		t.Fatal("namespace matching")
	}
	if !r.OwnsUser("@telegrambot:example.org", "example.org") {
		t.Fatal("the sender is the appservice's")
	}
	if !r.ASTokenIs("secret-as") || r.ASTokenIs("secret-a") || !r.HSTokenIs("secret-hs") {
		t.Fatal("token comparison")
	}
	if s := r.String(); strings.Contains(s, "secret") {
		t.Fatalf("String shows a token: %s", s)
	}
}

func TestParseInvalid(t *testing.T) {
	for yaml, field := range map[string]string{
		"as_token: a\nhs_token: h\nsender_localpart: b\n":                                                    "id",
		"id: x\nas_token: a\nhs_token: a\nsender_localpart: b\n":                                             "hs_token",
		"id: x\nas_token: a\nhs_token: h\n":                                                                  "sender_localpart",
		"id: x\nurl: ftp://x\nas_token: a\nhs_token: h\nsender_localpart: b\n":                               "url",
		"id: x\nas_token: a\nhs_token: h\nsender_localpart: b\nnamespaces:\n  rooms:\n  - exclusive: true\n": "namespaces.rooms[0].regex",
	} {
		_, err := Parse([]byte(yaml))
		if err == nil || !strings.HasPrefix(err.Error(), field+":") {
			t.Errorf("%q: error %v, want one naming %s", yaml, err, field)
		}
		if err != nil && (strings.Contains(err.Error(), "a\"") || strings.Contains(err.Error(), "secret")) {
			t.Errorf("error shows a token: %v", err)
		}
	}
}

func TestParseToDeviceOnly(t *testing.T) {
	r, err := Parse([]byte("id: x\nas_token: a\nhs_token: h\nsender_localpart: b\nde.sorunome.msc2409.push_to_device: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !r.PushesCrypto() || r.PushesEphemeral() || r.MSC4190 {
		t.Fatalf("parsed %+v", r)
	}
}
