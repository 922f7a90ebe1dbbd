package federationapi

// routeGroups are the federation endpoint groups defined in other files of
// this package (room-level federation, device lists…). Each registers
// itself from init, so New wires every group without a central list:
//
//	func init() { routeGroups = append(routeGroups, (*Federation).myRoutes) }
var routeGroups []func(*Federation)

func init() { routeGroups = append(routeGroups, (*Federation).roomRoutes) }

// registerRoutes adds this file set's own endpoints, then every group.
func (f *Federation) registerRoutes() {
	f.setFallbackHandlers()
	f.keyRoutes()
	f.handleOpen("GET", "/_matrix/federation/v1/version", f.serveVersion)
	f.handleSigned("PUT", "/_matrix/federation/v1/send/{txnId}", f.sendTransaction)
	for _, g := range routeGroups {
		g(f)
	}
}
