package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/roomserver"
	"enclave/storage"
	"enclave/syncapi"
)

// social serves what users see of each other: profiles (local and
// remote, within the visibility rules of SocialOptions) and presence.
type social struct {
	opts     Options
	db       *storage.DB
	rs       roomserver.API
	sync     *syncapi.Syncer
	accounts *accounts // optional authentication of profile lookups
	// authorize is the API's role check: looking up another server's
	// user makes this server federate, which needs the federate
	// permission although the route takes no token.
	authorize func(r *http.Request, dev *httpapi.Device, need perm.Requirement) (httpapi.Response, bool)
	// Set by the assembly before serving, read-only after.
	socialOpts     SocialOptions
	remoteProfiles RemoteProfiles
	appservices    AppServices     // user queries for unknown namespace users (nil: none)
	ephemeral      EphemeralSender // federation's presence sender
}

// SocialOptions are the config switches of the profile and presence
// endpoints (config profile.*; presence.enabled lives on the syncer's
// presence tracker).
type SocialOptions struct {
	// ProfileRequireSharedRoom limits profile lookups to users who share
	// a room with the requester.
	ProfileRequireSharedRoom bool
}

// SetSocialOptions installs the profile switches (wired from config).
func (a *API) SetSocialOptions(o SocialOptions) { a.social.socialOpts = o }

func (so *social) social() SocialOptions { return so.socialOpts }

// Profile limits.
const (
	maxDisplayNameLen = 256
	maxAvatarURLLen   = 1024
)

// looksLikeUserID accepts @localpart:server.
func looksLikeUserID(s string) bool {
	if len(s) < 4 || len(s) > 255 || s[0] != '@' {
		return false
	}
	i := strings.IndexByte(s, ':')
	return i > 1 && i < len(s)-1
}

// profileRequester authenticates the request if it carries a token: profile
// lookups work without one unless lookups are limited to shared rooms.
func (so *social) profileRequester(r *http.Request) (*httpapi.Device, httpapi.Response, bool) {
	if r.Header.Get("Authorization") == "" && r.URL.Query().Get("access_token") == "" {
		return nil, httpapi.Response{}, true
	}
	dev, resp, ok := so.accounts.authenticate(r)
	if !ok {
		return nil, resp, false
	}
	return dev, httpapi.Response{}, true
}

// canSeeProfile applies profile.require_shared_room: without it anyone may look
// a profile up; with it only the user and those sharing a room with them.
func (so *social) canSeeProfile(ctx context.Context, dev *httpapi.Device, target string) (httpapi.Response, bool) {
	if !so.social().ProfileRequireSharedRoom {
		return httpapi.Response{}, true
	}
	if dev == nil {
		return httpapi.Forbidden("profile lookup requires an access token"), false
	}
	if dev.UserID == target {
		return httpapi.Response{}, true
	}
	ok, err := storage.SharesRoom(ctx, so.db, dev.UserID, target)
	if err != nil {
		return httpapi.InternalError(nil, err), false
	}
	if !ok {
		return httpapi.Forbidden("you do not share a room with this user"), false
	}
	return httpapi.Response{}, true
}

func (so *social) lookupProfile(r *http.Request) (*storage.Profile, httpapi.Response, bool) {
	target := httpapi.Vars(r)["userId"]
	if !looksLikeUserID(target) {
		return nil, httpapi.InvalidParam("invalid user ID %q", target), false
	}
	dev, resp, ok := so.profileRequester(r)
	if !ok {
		return nil, resp, false
	}
	if resp, ok := so.canSeeProfile(r.Context(), dev, target); !ok {
		return nil, resp, false
	}
	var p *storage.Profile
	var err error
	if serverOf(target) != so.opts.ServerName {
		if dev == nil {
			return nil, httpapi.Forbidden("looking up a profile on another server needs an access token"), false
		}
		if resp, ok := so.authorize(r, dev, perm.Needs(perm.Federate)); !ok {
			return nil, resp, false
		}
		p, err = so.remoteProfile(r.Context(), target)
	} else {
		p, err = storage.GetProfile(r.Context(), so.db, target)
		if errors.Is(err, storage.ErrNotFound) && queryUser(r.Context(), so.appservices, target) {
			p, err = storage.GetProfile(r.Context(), so.db, target)
		}
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("no such user"), false
	} else if errors.Is(err, errRemoteProfile) {
		return nil, httpapi.Errf(http.StatusBadGateway, "M_UNKNOWN", "could not fetch the profile from %s", serverOf(target)), false
	} else if err != nil {
		return nil, httpapi.InternalError(r, err), false
	}
	return p, httpapi.Response{}, true
}

// RemoteProfiles looks up profiles of other servers' users (federation's
// query/profile); it answers storage.ErrNotFound for unknown users.
type RemoteProfiles interface {
	LookupProfile(ctx context.Context, userID string) (*storage.Profile, error)
}

// SetRemoteProfiles installs federation's profile lookups.
func (a *API) SetRemoteProfiles(rp RemoteProfiles) { a.social.remoteProfiles = rp }

// errRemoteProfile is a remote lookup that failed for another reason than
// the user being unknown.
var errRemoteProfile = errors.New("remote profile lookup failed")

func (so *social) remoteProfile(ctx context.Context, userID string) (*storage.Profile, error) {
	rp := so.remoteProfiles
	if rp == nil {
		return nil, storage.ErrNotFound
	}
	p, err := rp.LookupProfile(ctx, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		logrus.WithError(err).WithField("user_id", userID).Debug("profile: remote lookup failed")
		return nil, errRemoteProfile
	}
	return p, err
}

func (so *social) getProfile(r *http.Request) httpapi.Response {
	p, resp, ok := so.lookupProfile(r)
	if !ok {
		return resp
	}
	body := map[string]string{}
	if p.DisplayName != "" {
		body["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" {
		body["avatar_url"] = p.AvatarURL
	}
	return httpapi.JSON(200, body)
}

func (so *social) getProfileField(field string) handler {
	return func(r *http.Request) httpapi.Response {
		p, resp, ok := so.lookupProfile(r)
		if !ok {
			return resp
		}
		v := p.DisplayName
		if field == "avatar_url" {
			v = p.AvatarURL
		}
		if v == "" {
			return httpapi.NotFound("no %s set", field)
		}
		return httpapi.JSON(200, map[string]string{field: v})
	}
}

func (so *social) putProfileField(field string) authedHandler {
	return func(r *http.Request, dev *httpapi.Device) httpapi.Response {
		if httpapi.Vars(r)["userId"] != dev.UserID {
			return httpapi.Forbidden("you may only change your own profile")
		}
		var body map[string]json.RawMessage
		if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
			return resp
		}
		raw, present := body[field]
		if !present {
			return httpapi.MissingParam("missing %s", field)
		}
		var v *string
		if err := json.Unmarshal(raw, &v); err != nil {
			return httpapi.BadJSON("%s must be a string", field)
		}
		value := ""
		if v != nil {
			value = *v
		}
		switch field {
		case "displayname":
			if utf8.RuneCountInString(value) > maxDisplayNameLen {
				return httpapi.InvalidParam("displayname is longer than %d characters", maxDisplayNameLen)
			}
		case "avatar_url":
			// Stored as given: the spec does not require an mxc URI here
			// and clients decide what to show for anything else.
			if len(value) > maxAvatarURLLen {
				return httpapi.InvalidParam("avatar_url is longer than %d bytes", maxAvatarURLLen)
			}
		}
		ctx := r.Context()
		var err error
		if field == "displayname" {
			err = storage.SetAccountDisplayName(ctx, so.db, dev.UserID, value)
		} else {
			err = storage.SetAccountAvatarURL(ctx, so.db, dev.UserID, value)
		}
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		p, err := storage.GetProfile(ctx, so.db, dev.UserID)
		if err != nil {
			return httpapi.InternalError(r, err)
		}
		so.propagateProfile(ctx, dev.UserID, p)
		return httpapi.JSON(200, map[string]any{})
	}
}

// propagateProfile sends a new m.room.member join event with the profile
// to every room the user is joined to, so members see the change.
func (so *social) propagateProfile(ctx context.Context, userID string, p *storage.Profile) {
	rooms, err := storage.RoomsByMembership(ctx, so.db, userID, "join")
	if err != nil {
		logrus.WithError(err).WithField("user_id", userID).Error("profile: listing rooms")
		return
	}
	for roomID := range rooms {
		state, err := so.rs.CurrentState(ctx, roomID)
		if err != nil {
			logrus.WithError(err).WithField("room_id", roomID).Warn("profile: room state")
			continue
		}
		content := map[string]any{}
		if ev := state.Get("m.room.member", userID); ev != nil {
			_ = json.Unmarshal(ev.Content(), &content)
		}
		if m, _ := content["membership"].(string); m != "join" {
			continue
		}
		dn, _ := content["displayname"].(string)
		av, _ := content["avatar_url"].(string)
		if dn == p.DisplayName && av == p.AvatarURL {
			continue
		}
		delete(content, "reason")
		setOrDelete(content, "displayname", p.DisplayName)
		setOrDelete(content, "avatar_url", p.AvatarURL)
		b, _ := json.Marshal(content)
		uid := userID
		if _, err := so.rs.SendEvent(ctx, roomserver.SendRequest{RoomID: roomID, Sender: userID, Type: "m.room.member", StateKey: &uid, Content: b}); err != nil {
			logrus.WithError(err).WithField("room_id", roomID).Warn("profile: updating member event")
		}
	}
}

func setOrDelete(m map[string]any, k, v string) {
	if v == "" {
		delete(m, k)
	} else {
		m[k] = v
	}
}
