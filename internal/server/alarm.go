package server

import (
	"context"
	"slices"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/storage"
)

// alarmSet is the cluster's raised alarms. It changes only in the apply
// loop (alarms are raft requests, so every member agrees on them); readers
// take the mutex.
type alarmSet struct {
	mu  sync.RWMutex
	set map[membership.Alarm]struct{}
	// noSpace counts raised NOSPACE alarms; while any is raised, applying a
	// request that adds data fails with ErrNoSpace on every member.
	noSpace int
}

func newAlarmSet() *alarmSet {
	return &alarmSet{set: map[membership.Alarm]struct{}{}}
}

// replace makes alarms the raised set (at startup, and after a snapshot).
func (a *alarmSet) replace(alarms []membership.Alarm) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.set, a.noSpace = map[membership.Alarm]struct{}{}, 0
	for _, al := range alarms {
		a.addLocked(al)
	}
}

func (a *alarmSet) addLocked(al membership.Alarm) bool {
	if _, ok := a.set[al]; ok {
		return false
	}
	a.set[al] = struct{}{}
	if al.Type == int32(pb.AlarmType_NOSPACE) {
		a.noSpace++
	}
	return true
}

// spaceExceeded reports whether a NOSPACE alarm is raised.
func (a *alarmSet) spaceExceeded() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.noSpace > 0
}

// has reports whether alarm al is raised.
func (a *alarmSet) has(al membership.Alarm) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.set[al]
	return ok
}

// list returns the raised alarms of type t (all of them for NONE), ordered
// by member and type.
func (a *alarmSet) list(t pb.AlarmType) []*pb.AlarmMember {
	a.mu.RLock()
	var out []membership.Alarm
	for al := range a.set {
		if t == pb.AlarmType_NONE || al.Type == int32(t) {
			out = append(out, al)
		}
	}
	a.mu.RUnlock()
	slices.SortFunc(out, func(x, y membership.Alarm) int {
		if x.MemberID != y.MemberID {
			if x.MemberID < y.MemberID {
				return -1
			}
			return 1
		}
		return int(x.Type - y.Type)
	})
	res := make([]*pb.AlarmMember, len(out))
	for i, al := range out {
		res[i] = &pb.AlarmMember{MemberID: al.MemberID, Alarm: pb.AlarmType(al.Type)}
	}
	return res
}

// apply applies an AlarmRequest in the apply loop, staging the change in b.
// Its answers are etcd's: ACTIVATE returns the alarm (new or already
// raised), DEACTIVATE the alarm it cleared (none if it was not raised), GET
// the raised alarms of the asked type.
func (a *alarmSet) apply(b *storage.Batch, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	resp := &pb.AlarmResponse{Header: &pb.ResponseHeader{}}
	al := membership.Alarm{MemberID: r.MemberID, Type: int32(r.Alarm)}
	switch r.Action {
	case pb.AlarmRequest_GET:
		resp.Alarms = a.list(r.Alarm)
	case pb.AlarmRequest_ACTIVATE:
		if r.Alarm == pb.AlarmType_NONE {
			break
		}
		a.mu.Lock()
		added := a.addLocked(al)
		a.mu.Unlock()
		if added {
			if err := membership.StageAlarm(b, al, true); err != nil {
				return nil, err
			}
		}
		resp.Alarms = []*pb.AlarmMember{{MemberID: r.MemberID, Alarm: r.Alarm}}
	case pb.AlarmRequest_DEACTIVATE:
		a.mu.Lock()
		_, ok := a.set[al]
		if ok {
			delete(a.set, al)
			if al.Type == int32(pb.AlarmType_NOSPACE) {
				a.noSpace--
			}
		}
		a.mu.Unlock()
		if ok {
			if err := membership.StageAlarm(b, al, false); err != nil {
				return nil, err
			}
			resp.Alarms = []*pb.AlarmMember{{MemberID: r.MemberID, Alarm: r.Alarm}}
		}
	}
	return resp, nil
}

// Alarms returns the raised alarms, ordered by member and type.
func (s *Server) Alarms() []*pb.AlarmMember { return s.alarms.list(pb.AlarmType_NONE) }

// Alarm gets, raises or clears alarms through raft, as etcd's
// Maintenance.Alarm does. Clearing NOSPACE lets writes through again (until
// the quota check raises it anew); a member also clears its own NOSPACE
// alarm once it is back under 80% of its quota (see quota).
func (s *Server) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	return proposed[*pb.AlarmResponse](s, ctx, &pb.InternalRaftRequest{Alarm: r}, 0, nil)
}
