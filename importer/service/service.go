package service

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"enclave/auditapi"
	"enclave/importer"
	"enclave/importer/mattermost"
	"enclave/importer/slack"
	"enclave/internal/httpapi"
	"enclave/internal/perm"
	"enclave/storage"
)

// Path is the import endpoint ({platform}: slack or mattermost).
const Path = "/_enclave/admin/v1/import/{platform}"

// Service is the import endpoint of a running server.
type Service struct {
	DB         *storage.DB
	Rooms      importer.Rooms
	Media      importer.Media
	Audit      *auditapi.Log
	ServerName string
	// SpoolDir receives the uploaded export while it is imported.
	SpoolDir string

	api httpapi.Routes
	// one import at a time: two would race for the same rooms' tips.
	running sync.Mutex
}

// Register mounts the endpoint: admins who may manage users and rooms.
func (s *Service) Register(api httpapi.Routes) error {
	s.api = api
	return api.HandleRaw(http.MethodPost, Path, "admin", perm.Needs(perm.UseAdminAPI, perm.ManageUsers, perm.ManageRooms), s.handle)
}

// POST /_enclave/admin/v1/import/{platform}?dry_run=&workspace=&file_name=&operator=&users_map=
// Body: the export file. Answers the report (importer.Report).
func (s *Service) handle(w http.ResponseWriter, r *http.Request) {
	dev, resp, ok := s.api.Authenticate(r)
	if !ok {
		httpapi.WriteResponse(w, resp)
		return
	}
	platform := httpapi.Vars(r)["platform"]
	if platform != "slack" && platform != "mattermost" {
		httpapi.WriteResponse(w, httpapi.Errf(http.StatusNotFound, "M_UNRECOGNIZED", "unknown import format %q (slack or mattermost)", platform))
		return
	}
	q := r.URL.Query()
	dry, _ := strconv.ParseBool(q.Get("dry_run"))
	name := filepath.Base(q.Get("file_name"))
	if name == "." || name == "/" || name == "" {
		name = platform + "-export.zip"
	}
	users := map[string]string{}
	if m := q.Get("users_map"); m != "" {
		if err := json.Unmarshal([]byte(m), &users); err != nil {
			httpapi.WriteResponse(w, httpapi.Errf(http.StatusBadRequest, "M_INVALID_PARAM", "users_map: a JSON object of source to local user: %v", err))
			return
		}
		for k, v := range users {
			delete(users, k)
			users[strings.ToLower(k)] = v
		}
	}
	operator := q.Get("operator")
	if operator == "" {
		operator = dev.UserID
	} else {
		operator += " (as " + dev.UserID + ")"
	}
	if !s.running.TryLock() {
		httpapi.WriteResponse(w, httpapi.Errf(http.StatusConflict, "M_UNKNOWN", "an import is running; try again when it has finished"))
		return
	}
	defer s.running.Unlock()

	// The export is spooled (zip needs random access), hashed on the way.
	if err := os.MkdirAll(s.SpoolDir, 0o700); err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	f, err := os.CreateTemp(s.SpoolDir, "import-*"+filepath.Ext(name))
	if err != nil {
		httpapi.WriteResponse(w, httpapi.InternalError(r, err))
		return
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(f, h), r.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		httpapi.WriteResponse(w, httpapi.Errf(http.StatusBadRequest, "M_UNKNOWN", "could not read the export: %v", err))
		return
	}
	sum := hex.EncodeToString(h.Sum(nil))
	workspace := q.Get("workspace")
	if workspace == "" {
		workspace = strings.TrimSuffix(name, filepath.Ext(name))
	}
	var src importer.Source
	if platform == "slack" {
		e, err := slack.Open(f.Name(), workspace)
		if err != nil {
			httpapi.WriteResponse(w, httpapi.Errf(http.StatusBadRequest, "M_INVALID_PARAM", "%v", err))
			return
		}
		defer e.Close()
		src = e
	} else {
		e, err := mattermost.Open(f.Name(), workspace)
		if err != nil {
			httpapi.WriteResponse(w, httpapi.Errf(http.StatusBadRequest, "M_INVALID_PARAM", "%v", err))
			return
		}
		defer e.Close()
		src = e
	}
	o := importer.Options{DB: s.DB, Rooms: s.Rooms, Media: s.Media, Audit: s.Audit, ServerName: s.ServerName, DryRun: dry,
		FileName: name, SHA256: sum, Size: size, Operator: operator, UsersMap: users}
	rep, err := importer.Run(r.Context(), src, o)
	if err != nil {
		logrus.WithError(err).WithField("import", importer.ImportID(sum)).Error("import stopped (run it again to resume)")
		httpapi.WriteResponse(w, httpapi.Errf(http.StatusInternalServerError, "M_UNKNOWN", "import %s stopped: %v (run it again to resume)", importer.ImportID(sum), err))
		return
	}
	httpapi.WriteResponse(w, httpapi.JSON(http.StatusOK, rep))
}
