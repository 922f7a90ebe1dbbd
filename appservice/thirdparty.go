package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sync"

	"enclave/auditapi"
	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/storage"
)

// Third-party networks (spec: client API "Third-party Networks"): a
// client's /thirdparty lookups are proxied to the bridges whose
// registration declares the protocol, asked in parallel, each bounded by
// queryTimeout, and their answers merged. A bridge that fails or times
// out is left out of the answer rather than failing it.

// thirdPartyMaxBody bounds what one bridge's answer may hold.
const thirdPartyMaxBody = 1 << 20

// registerThirdParty mounts the lookups and the network directory.
func (s *Service) registerThirdParty(routes httpapi.Routes) error {
	var errs []error
	for _, v := range []string{"v3", "r0"} {
		p := "/_matrix/client/" + v
		errs = append(errs,
			routes.HandleAuthed("GET", p+"/thirdparty/protocols", "thirdparty", perm.AnyUser, s.protocols),
			routes.HandleAuthed("GET", p+"/thirdparty/protocol/{protocol}", "thirdparty", perm.AnyUser, s.protocol),
			routes.HandleAuthed("GET", p+"/thirdparty/location/{protocol}", "thirdparty", perm.AnyUser, s.lookup("location", true)),
			routes.HandleAuthed("GET", p+"/thirdparty/user/{protocol}", "thirdparty", perm.AnyUser, s.lookup("user", true)),
			routes.HandleAuthed("GET", p+"/thirdparty/location", "thirdparty", perm.AnyUser, s.lookup("location", false)),
			routes.HandleAuthed("GET", p+"/thirdparty/user", "thirdparty", perm.AnyUser, s.lookup("user", false)),
			routes.HandleAuthed("PUT", p+"/directory/list/appservice/{networkId}/{roomId}", "directory", perm.AnyUser, s.putNetworkRoom),
		)
	}
	return errors.Join(errs...)
}

// declaring lists the appservices (with a url) that declare protocol, or
// any protocol when protocol is "".
func (s *Service) declaring(protocol string) []*Registration {
	var out []*Registration
	for _, r := range s.Registrations() {
		if r.PushURL() != "" && len(r.Protocols) > 0 && (protocol == "" || slices.Contains(r.Protocols, protocol)) {
			out = append(out, r)
		}
	}
	return out
}

// askAll makes the same GET of each appservice in parallel and returns
// the decoded 200 answers, in registration order.
func (s *Service) askAll(ctx context.Context, regs []*Registration, path func(*Registration) string, decode func([]byte) (any, bool)) []any {
	out := make([]any, len(regs))
	var wg sync.WaitGroup
	for i, r := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, queryTimeout)
			defer cancel()
			status, body, err := s.callBody(ctx, r, http.MethodGet, r.PushURL()+path(r), nil, thirdPartyMaxBody)
			if err != nil || status != http.StatusOK {
				return
			}
			if v, ok := decode(body); ok {
				out[i] = v
			}
		}()
	}
	wg.Wait()
	return slices.DeleteFunc(out, func(v any) bool { return v == nil })
}

func decodeObject(b []byte) (any, bool) {
	var m map[string]any
	return m, json.Unmarshal(b, &m) == nil && m != nil
}

func decodeArray(b []byte) (any, bool) {
	var a []any
	return a, json.Unmarshal(b, &a) == nil && a != nil
}

// protocolAnswers asks every appservice declaring protocol for its
// description and merges them: the first answer's fields, every answer's
// instances, each instance named "appservice|network" so /publicRooms
// can find its network directory.
func (s *Service) protocolAnswer(ctx context.Context, protocol string) map[string]any {
	regs := s.declaring(protocol)
	var merged map[string]any
	instances := []any{}
	// askAll drops failures, so keep each answer with its appservice.
	for _, r := range regs {
		got := s.askAll(ctx, []*Registration{r}, func(*Registration) string {
			return "/_matrix/app/v1/thirdparty/protocol/" + url.PathEscape(protocol)
		}, decodeObject)
		if len(got) == 0 {
			continue
		}
		m := got[0].(map[string]any)
		if merged == nil {
			merged = m
		}
		list, _ := m["instances"].([]any)
		for _, in := range list {
			inst, ok := in.(map[string]any)
			if !ok {
				continue
			}
			network, _ := inst["network_id"].(string)
			inst["instance_id"] = r.ID + "|" + network
			instances = append(instances, inst)
		}
	}
	if merged != nil {
		merged["instances"] = instances
	}
	return merged
}

// GET /thirdparty/protocols: every declared protocol a bridge described.
func (s *Service) protocols(r *http.Request, _ *httpapi.Device) httpapi.Response {
	var names []string
	for _, reg := range s.declaring("") {
		for _, p := range reg.Protocols {
			if !slices.Contains(names, p) {
				names = append(names, p)
			}
		}
	}
	out := map[string]any{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m := s.protocolAnswer(r.Context(), p); m != nil {
				mu.Lock()
				out[p] = m
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return httpapi.JSON(http.StatusOK, out)
}

// GET /thirdparty/protocol/{protocol}
func (s *Service) protocol(r *http.Request, _ *httpapi.Device) httpapi.Response {
	p := httpapi.Vars(r)["protocol"]
	if len(s.declaring(p)) == 0 {
		return httpapi.NotFound("unknown protocol %q", p)
	}
	m := s.protocolAnswer(r.Context(), p)
	if m == nil {
		return httpapi.Errf(http.StatusBadGateway, "M_UNKNOWN", "no bridge of protocol %q answered", p)
	}
	return httpapi.JSON(http.StatusOK, m)
}

// lookup proxies the location and user lookups: of one protocol (its
// fields in the query string) or, without one, by alias / userid to every
// bridge that declares a protocol. The answers' arrays are concatenated.
func (s *Service) lookup(kind string, byProtocol bool) func(*http.Request, *httpapi.Device) httpapi.Response {
	return func(r *http.Request, _ *httpapi.Device) httpapi.Response {
		q := r.URL.Query()
		q.Del("access_token")
		q.Del("user_id") // an appservice's own masquerading, not a field
		path := "/_matrix/app/v1/thirdparty/" + kind
		var regs []*Registration
		if byProtocol {
			p := httpapi.Vars(r)["protocol"]
			if regs = s.declaring(p); len(regs) == 0 {
				return httpapi.NotFound("unknown protocol %q", p)
			}
			path += "/" + url.PathEscape(p)
		} else {
			param := map[string]string{"location": "alias", "user": "userid"}[kind]
			if q.Get(param) == "" {
				return httpapi.MissingParam("%s is required", param)
			}
			q = url.Values{param: {q.Get(param)}}
			regs = s.declaring("")
		}
		if enc := q.Encode(); enc != "" {
			path += "?" + enc
		}
		out := []any{}
		for _, a := range s.askAll(r.Context(), regs, func(*Registration) string { return path }, decodeArray) {
			out = append(out, a.([]any)...)
		}
		return httpapi.JSON(http.StatusOK, out)
	}
}

// PUT /directory/list/appservice/{networkId}/{roomId}: an appservice
// publishes a room in (or withdraws it from) its network's directory.
// Only an as_token may; the room must exist.
func (s *Service) putNetworkRoom(r *http.Request, dev *httpapi.Device) httpapi.Response {
	if dev.AppService == "" {
		return httpapi.Forbidden("only an application service may publish in a network's directory")
	}
	v := httpapi.Vars(r)
	var body struct {
		Visibility string `json:"visibility"`
	}
	if resp, ok := httpapi.DecodeJSON(r, &body); !ok {
		return resp
	}
	if body.Visibility != "public" && body.Visibility != "private" {
		return httpapi.InvalidParam("visibility must be public or private")
	}
	if _, err := storage.GetRoom(r.Context(), s.opts.DB, v["roomId"]); errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("room %s not found", v["roomId"])
	} else if err != nil {
		return httpapi.InternalError(r, err)
	}
	err := s.opts.DB.WithTx(r.Context(), func(tx *storage.Tx) error {
		if err := storage.SetAppServiceRoomListed(r.Context(), tx, dev.AppService, v["networkId"], v["roomId"], body.Visibility == "public"); err != nil {
			return err
		}
		return s.opts.Audit.Record(r.Context(), tx, auditapi.Entry{
			Actor:  auditapi.Actor{UserID: dev.UserID, AppService: dev.AppService},
			Action: auditapi.ActionAppServiceNetworkRoom, Target: v["roomId"],
			Details: map[string]any{"appservice": dev.AppService, "network_id": v["networkId"], "visibility": body.Visibility},
		})
	})
	if err != nil {
		return httpapi.InternalError(r, err)
	}
	return httpapi.JSON(http.StatusOK, struct{}{})
}
