package server

import (
	"sync"

	"github.com/cairn-db/cairn/internal/membership"
)

// memberList is the applied member list and the removed IDs, as readers
// see them. The apply loop keeps its own copy while it builds a batch
// (applyState) and replaces this one once the batch is committed; every
// other goroutine reads it here.
type memberList struct {
	mu      sync.RWMutex
	list    []membership.Member // sorted by ID
	removed map[uint64]bool
	changed chan struct{} // closed and replaced on every change
}

// replace makes list and removed the applied member list (the caller gives
// them up) and wakes those waiting for a change.
func (ml *memberList) replace(list []membership.Member, removed map[uint64]bool) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	ml.list, ml.removed = list, removed
	if ml.changed != nil {
		close(ml.changed)
	}
	ml.changed = make(chan struct{})
}

// changedC returns a channel closed at the next change of the list.
func (ml *memberList) changedC() <-chan struct{} {
	ml.mu.RLock()
	defer ml.mu.RUnlock()
	return ml.changed
}

// all returns a copy of the list, sorted by ID.
func (ml *memberList) all() []membership.Member {
	ml.mu.RLock()
	defer ml.mu.RUnlock()
	out := make([]membership.Member, len(ml.list))
	copy(out, ml.list)
	return out
}

// get returns member id.
func (ml *memberList) get(id uint64) (membership.Member, bool) {
	ml.mu.RLock()
	defer ml.mu.RUnlock()
	for _, m := range ml.list {
		if m.ID == id {
			return m, true
		}
	}
	return membership.Member{}, false
}

// isRemoved reports whether member id was removed from the cluster.
func (ml *memberList) isRemoved(id uint64) bool {
	ml.mu.RLock()
	defer ml.mu.RUnlock()
	return ml.removed[id]
}

// soleVoter reports whether exactly one member votes.
func (ml *memberList) soleVoter() bool {
	return len(ml.voters()) == 1
}

// voters returns the IDs of the voting members.
func (ml *memberList) voters() []uint64 {
	ml.mu.RLock()
	defer ml.mu.RUnlock()
	var ids []uint64
	for _, m := range ml.list {
		if !m.IsLearner {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// startedVoters counts the voting members other than except, and how many
// of them have started (published their name).
func (ml *memberList) startedVoters(except uint64) (voters, started int) {
	ml.mu.RLock()
	defer ml.mu.RUnlock()
	for _, m := range ml.list {
		if m.IsLearner || m.ID == except {
			continue
		}
		voters++
		if m.IsStarted() {
			started++
		}
	}
	return voters, started
}

// peerURLs returns the peer URLs of every member but self; until self
// appears in the list, those of the seed members not removed too (a
// member that joins must reach the cluster before it learns the list).
func (ml *memberList) peerURLs(self uint64, seed []membership.Member) map[uint64][]string {
	ml.mu.RLock()
	defer ml.mu.RUnlock()
	want := map[uint64][]string{}
	found := false
	for _, m := range ml.list {
		want[m.ID] = m.PeerURLs
		found = found || m.ID == self
	}
	if !found {
		for _, m := range seed {
			if _, ok := want[m.ID]; !ok && !ml.removed[m.ID] {
				want[m.ID] = m.PeerURLs
			}
		}
	}
	delete(want, self)
	return want
}
