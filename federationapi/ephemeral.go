package federationapi

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"
)

// EphemeralSender carries local users' typing, read receipts and presence
// to other servers; the client API calls it after storing a change
// (clientapi.EphemeralSender). Typing is sent at once, and again as a stop
// when it lapses here without one (other servers would otherwise wait for
// their own, longer, timeout). Receipts and presence are read back from the
// stream by the tailer (tailEphemeral): a change only wakes it.
type EphemeralSender struct {
	f *Federation
	// typingUsers is who is typing in a room now (the sync typing
	// tracker), so a lapse does not stop a user who typed again.
	typingUsers func(roomID string) []string

	mu     sync.Mutex
	timers map[string]*time.Timer // room|user → typing lapse
}

// EphemeralSender makes the sender of local typing, receipt and presence
// EDUs; typingUsers reads the local typing state. Stop it on shutdown.
func (f *Federation) EphemeralSender(typingUsers func(roomID string) []string) *EphemeralSender {
	return &EphemeralSender{f: f, typingUsers: typingUsers, timers: map[string]*time.Timer{}}
}

// ephemeralSendTimeout bounds one typing EDU's enqueueing; it does not
// end with the client's request.
const ephemeralSendTimeout = 10 * time.Second

// SendTyping tells the servers in the room that a local user started or
// stopped typing, and arms the lapse after timeout.
func (e *EphemeralSender) SendTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) {
	e.arm(roomID, userID, typing, timeout)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ephemeralSendTimeout)
	defer cancel()
	if err := e.send(ctx, roomID, userID, typing); err != nil {
		logrus.WithError(err).WithField("room_id", roomID).Warn("federation: sending typing")
	}
}

// ReceiptChanged has the tailer look for new receipts now.
func (e *EphemeralSender) ReceiptChanged() { e.kick() }

// PresenceChanged has the tailer look for new presence now.
func (e *EphemeralSender) PresenceChanged() { e.kick() }

func (e *EphemeralSender) kick() {
	select {
	case e.f.ext().kick <- struct{}{}:
	default:
	}
}

// send queues one m.typing EDU for the other servers in the room.
func (e *EphemeralSender) send(ctx context.Context, roomID, userID string, typing bool) error {
	f := e.f
	if !f.isLocalUser(userID) {
		return nil
	}
	dests, err := f.serversInRoom(ctx, roomID)
	if dests = f.reachable(dests); err != nil || len(dests) == 0 {
		return err
	}
	content, _ := json.Marshal(map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
	return f.SendEDU(ctx, dests, gomatrixserverlib.EDU{Type: spec.MTyping, Content: content})
}

// arm replaces the user's lapse timer in the room (none when typing
// stops): half a second after timeout, a user no longer typing here is
// sent as stopped.
func (e *EphemeralSender) arm(roomID, userID string, typing bool, timeout time.Duration) {
	key := roomID + "|" + userID
	e.mu.Lock()
	defer e.mu.Unlock()
	if old := e.timers[key]; old != nil {
		old.Stop()
		delete(e.timers, key)
	}
	if !typing {
		return
	}
	var timer *time.Timer
	timer = time.AfterFunc(timeout+500*time.Millisecond, func() {
		e.mu.Lock()
		current := e.timers[key] == timer
		if current {
			delete(e.timers, key)
		}
		e.mu.Unlock()
		if !current {
			return
		}
		for _, u := range e.typingUsers(roomID) {
			if u == userID {
				return // typing again
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), ephemeralSendTimeout)
		defer cancel()
		if err := e.send(ctx, roomID, userID, false); err != nil {
			logrus.WithError(err).WithField("room_id", roomID).Debug("federation: sending typing timeout")
		}
	})
	e.timers[key] = timer
}

// Stop cancels the pending typing lapses.
func (e *EphemeralSender) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, timer := range e.timers {
		timer.Stop()
		delete(e.timers, k)
	}
}
