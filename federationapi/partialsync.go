package federationapi

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"enclave/roomserver"
	"enclave/storage"
)

// partialSync is the joining side of faster joins (MSC3706, MSC3902):
// after a send_join answered without members, JoinRemote returns at once
// and partialSync fetches the state before our join (/state at the join
// event) from the servers of the answer's servers_in_room, the resident
// first, retrying with backoff until one answers; the room server then
// adds the members the room lacks and clears its mark. Meanwhile our
// events go to those servers as well as to the ones the partial state
// names. Rooms still partial at start are resumed.
type partialSync struct {
	f      *Federation
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	rooms map[string][]spec.ServerName // room ID → servers_in_room
}

// resyncBackoff bounds the wait between two resync attempts.
const resyncBackoff = time.Minute

func newPartialSync(f *Federation) *partialSync {
	ctx, cancel := context.WithCancel(context.Background())
	return &partialSync{f: f, ctx: ctx, cancel: cancel, rooms: map[string][]spec.ServerName{}}
}

// track notes the servers of a room joined with partial state.
func (p *partialSync) track(roomID string, servers []string) {
	list := make([]spec.ServerName, 0, len(servers))
	for _, s := range servers {
		if spec.ServerName(s) != p.f.serverName {
			list = append(list, spec.ServerName(s))
		}
	}
	p.mu.Lock()
	p.rooms[roomID] = list
	p.mu.Unlock()
}

// done forgets a room whose state is complete (or whose join failed).
func (p *partialSync) done(roomID string) {
	p.mu.Lock()
	delete(p.rooms, roomID)
	p.mu.Unlock()
}

// servers lists the servers_in_room of a room still partial (nil
// otherwise): QueueRoomEvent sends to them too.
func (p *partialSync) servers(roomID string) []spec.ServerName {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rooms[roomID]
}

// resume restarts the resync of every room still marked partial.
func (p *partialSync) resume() {
	rows, err := storage.PartialStateRooms(p.ctx, p.f.db)
	if err != nil {
		logrus.WithError(err).Warn("federation: listing partial-state rooms")
		return
	}
	for _, r := range rows {
		if r.CompleteTS != 0 {
			continue
		}
		ver, err := p.f.rs.RoomVersion(p.ctx, r.RoomID)
		if err != nil {
			continue
		}
		servers := append([]string{r.Origin}, r.Servers...)
		p.track(r.RoomID, servers)
		p.start(r.RoomID, r.JoinEventID, ver, servers)
	}
}

// start resyncs the room in the background.
func (p *partialSync) start(roomID, joinEventID string, ver gomatrixserverlib.RoomVersion, servers []string) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.run(roomID, joinEventID, ver, servers)
	}()
}

func (p *partialSync) stop() {
	p.cancel()
	p.wg.Wait()
}

func (p *partialSync) run(roomID, joinEventID string, ver gomatrixserverlib.RoomVersion, servers []string) {
	log := logrus.WithField("room_id", roomID)
	wait := time.Second
	for attempt := 0; ; attempt++ {
		for _, s := range servers {
			server := spec.ServerName(s)
			if server == p.f.serverName {
				continue
			}
			start := time.Now()
			state, auth, err := p.f.Fetcher().StateBefore(p.ctx, server, roomID, joinEventID, ver)
			if err != nil {
				log.WithError(err).WithField("server", server).Info("federation: partial-state resync failed; next server")
				continue
			}
			n, err := p.f.rs.PartialJoins().Complete(p.ctx, roomID, state, auth)
			if err != nil {
				log.WithError(err).Warn("federation: storing the resynced state")
				continue
			}
			p.done(roomID)
			log.WithField("server", server).WithField("members_added", n).WithField("took", time.Since(start).Round(time.Millisecond)).Info("federation: partial-state room complete")
			return
		}
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, resyncBackoff)
	}
}

// in is ServersInRoom(st) and, while roomID is partial, the servers of its
// send_join answer (the partial state names none but ours): the servers
// to backfill from, fill gaps with, or leave through.
func (p *partialSync) in(roomID string, st roomserver.StateMap) []spec.ServerName {
	out := ServersInRoom(st)
	extra := p.servers(roomID)
	if len(extra) == 0 {
		return out
	}
	seen := map[spec.ServerName]bool{}
	for _, s := range out {
		seen[s] = true
	}
	for _, s := range extra {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
