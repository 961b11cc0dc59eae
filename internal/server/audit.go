package server

import (
	"context"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cairn-db/cairn/internal/audit"
	"github.com/cairn-db/cairn/internal/auth"
)

// The audit log (--audit-log, package audit): every member records the
// auth changes it applies (applyAuth), and the member that answers a
// request it refuses for an auth reason records the refusal (reads, the
// admin and user checks, watches, Authenticate, the lease access checks,
// and proposals whose apply refused them), with the key range that
// lacked a permission (see the locate functions). With the log off,
// s.auth.audit is nil and each hook costs a nil check. Lease expiry is
// never refused: the leader revokes as root, as etcd does.

// refusalErrors are the errors that refuse a request for an auth reason.
// ErrAuthOldRevision is not one: clientv3 retries it.
var refusalErrors = []error{
	auth.ErrPermissionDenied, auth.ErrUserEmpty, auth.ErrInvalidAuthToken,
	auth.ErrAuthFailed, auth.ErrNoPasswordUser,
}

func isRefusal(err error) bool {
	if err == nil {
		return false
	}
	for _, e := range refusalErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// refused records ev as a refusal for err, if err is one (or force: a
// check whose every error is a refusal, such as the admin check's
// ErrUserNotFound).
func (a *authority) refused(ev audit.Event, user string, err error, force bool) {
	if a.audit == nil || err == nil || !force && !isRefusal(err) {
		return
	}
	ev.Kind, ev.Member, ev.User, ev.Reason = audit.KindRefused, a.member, user, err.Error()
	a.audit.Record(ev)
}

// userOf names ctx's user for the log: "" when it names none or its
// token is not valid.
func (a *authority) userOf(ctx context.Context) string {
	ai, err := a.info(ctx)
	if err != nil || ai == nil {
		return ""
	}
	return ai.Username
}

// methodOf names the gRPC method ctx serves ("/etcdserverpb.Cluster/MemberAdd"
// becomes "MemberAdd"), or fallback.
func methodOf(ctx context.Context, fallback string) string {
	if m, ok := grpc.Method(ctx); ok && m != "" {
		return m[strings.LastIndexByte(m, '/')+1:]
	}
	return fallback
}

// describe is the event naming r: its method (etcd's RPC name), and the
// key range, user, role or permission it names.
func describe(r *pb.InternalRaftRequest) audit.Event {
	var ev audit.Event
	m := r.ProtoReflect()
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.Name() == "header" {
			return true
		}
		name := fd.JSONName()
		name = strings.ToUpper(name[:1]) + name[1:]
		if rest, ok := strings.CutPrefix(name, "Auth"); ok && (strings.HasPrefix(rest, "User") || strings.HasPrefix(rest, "Role")) {
			name = rest
		}
		if name == "Compaction" {
			name = "Compact" // the RPC's name
		}
		ev.Method = name
		return false
	})
	var perm *authpb.Permission
	switch {
	case r.Put != nil:
		ev.Key, ev.Lease = r.Put.Key, r.Put.Lease
	case r.DeleteRange != nil:
		ev.Key, ev.RangeEnd = r.DeleteRange.Key, r.DeleteRange.RangeEnd
	case r.Txn != nil:
		ev.Key, ev.RangeEnd = firstTxnRange(r.Txn)
	case r.LeaseRevoke != nil:
		ev.Lease = r.LeaseRevoke.ID
	case r.AuthUserAdd != nil:
		ev.Name = r.AuthUserAdd.Name
	case r.AuthUserDelete != nil:
		ev.Name = r.AuthUserDelete.Name
	case r.AuthUserChangePassword != nil:
		ev.Name = r.AuthUserChangePassword.Name
	case r.AuthUserGrantRole != nil:
		ev.Name, ev.Role = r.AuthUserGrantRole.User, r.AuthUserGrantRole.Role
	case r.AuthUserRevokeRole != nil:
		ev.Name, ev.Role = r.AuthUserRevokeRole.Name, r.AuthUserRevokeRole.Role
	case r.AuthUserGet != nil:
		ev.Name = r.AuthUserGet.Name
	case r.AuthRoleAdd != nil:
		ev.Name = r.AuthRoleAdd.Name
	case r.AuthRoleDelete != nil:
		ev.Name = r.AuthRoleDelete.Role
	case r.AuthRoleGet != nil:
		ev.Name = r.AuthRoleGet.Role
	case r.AuthRoleGrantPermission != nil:
		ev.Name, perm = r.AuthRoleGrantPermission.Name, r.AuthRoleGrantPermission.Perm
	case r.AuthRoleRevokePermission != nil:
		rp := r.AuthRoleRevokePermission
		ev.Name, ev.Key, ev.RangeEnd = rp.Role, rp.Key, rp.RangeEnd
	case r.Authenticate != nil:
		ev.Name = r.Authenticate.Name
	}
	if perm != nil {
		ev.Perm, ev.Key, ev.RangeEnd = perm.PermType.String(), perm.Key, perm.RangeEnd
	}
	return ev
}

// isAuthChange reports whether r changes the auth state when it succeeds.
func isAuthChange(r *pb.InternalRaftRequest) bool {
	return r.AuthEnable != nil || r.AuthDisable != nil || r.AuthUserAdd != nil || r.AuthUserDelete != nil ||
		r.AuthUserChangePassword != nil || r.AuthUserGrantRole != nil || r.AuthUserRevokeRole != nil ||
		r.AuthRoleAdd != nil || r.AuthRoleDelete != nil || r.AuthRoleGrantPermission != nil ||
		r.AuthRoleRevokePermission != nil
}

// auditChange records the auth change r, applied at index; the apply
// loop calls it on every member once the change succeeded.
func (s *Server) auditChange(r *pb.InternalRaftRequest, index uint64) {
	if s.auth.audit == nil || !isAuthChange(r) {
		return
	}
	ev := describe(r)
	ev.Kind, ev.Member, ev.User = audit.KindAuthChange, s.cfg.Name, r.GetHeader().GetUsername()
	ev.Index, ev.AuthRevision = index, s.auth.st().Revision()
	s.auth.audit.Record(ev)
}

// auditProposal records a proposal refused for an auth reason: by the
// credentials it came with, or by apply's checks.
func (s *Server) auditProposal(r *pb.InternalRaftRequest, err error) {
	if s.auth.audit == nil || !isRefusal(err) {
		return
	}
	user := r.GetHeader().GetUsername()
	if r.Authenticate != nil {
		user = r.Authenticate.Name
	}
	ev := describe(r)
	if errors.Is(err, auth.ErrPermissionDenied) {
		st := s.auth.st()
		ai := auth.AuthInfo{Username: user, Revision: st.Revision()}
		switch {
		case r.Put != nil:
			s.locatePutDenial(&ev, st, ai, r.Put)
		case r.Txn != nil:
			s.locateTxnDenial(&ev, st, ai, r.Txn)
		case r.LeaseRevoke != nil:
			s.locateLeaseDenial(&ev, st, ai, r.LeaseRevoke.ID, true)
		}
	}
	s.auth.refused(ev, user, err, false)
}

// auditLeaseRefusal records the refusal err of a lease access check
// (checkLeaseAccess) of lease id, with the key that lacked the permission.
func (s *Server) auditLeaseRefusal(ctx context.Context, method string, id int64, write bool, err error) {
	user := s.auth.userOf(ctx)
	ev := audit.Event{Method: methodOf(ctx, method), Lease: id}
	if errors.Is(err, auth.ErrPermissionDenied) {
		st := s.auth.st()
		s.locateLeaseDenial(&ev, st, auth.AuthInfo{Username: user, Revision: st.Revision()}, id, write)
	}
	s.auth.refused(ev, user, err, false)
}

// Locating a denial. Apply's checks (checkEntry) and the lease checks
// answer only "permission denied"; for the audit log, the locate
// functions repeat them piece by piece against the store as it is now
// and set ev's key range (and lease) to the first piece refused: a txn's
// compare or op (nested txns included), the key a put writes, or a key
// attached to the lease a put or LeaseRevoke names. They run only for a
// refusal the log records, so the checks themselves stay as they are. If
// the permissions changed in between and no piece is refused any more,
// ev keeps what describe gave it (a txn's first key range).

// locateTxnDenial sets ev to the first piece of txn r that ai may not
// touch; it reports whether it found one.
func (s *Server) locateTxnDenial(ev *audit.Event, st *auth.Store, ai auth.AuthInfo, r *pb.TxnRequest) bool {
	deny := func(key, end []byte, err error) bool {
		if err == nil {
			return false
		}
		ev.Key, ev.RangeEnd, ev.Lease = key, end, 0
		return true
	}
	for _, c := range r.Compare {
		if deny(c.Key, c.RangeEnd, st.IsRangePermitted(ai, c.Key, c.RangeEnd)) {
			return true
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch {
			case op.GetRequestRange() != nil:
				rr := op.GetRequestRange()
				if deny(rr.Key, rr.RangeEnd, st.IsRangePermitted(ai, rr.Key, rr.RangeEnd)) {
					return true
				}
			case op.GetRequestPut() != nil:
				if s.locatePutDenial(ev, st, ai, op.GetRequestPut()) {
					return true
				}
			case op.GetRequestDeleteRange() != nil:
				dr := op.GetRequestDeleteRange()
				err := st.IsDeleteRangePermitted(ai, dr.Key, dr.RangeEnd)
				if err == nil && dr.PrevKv {
					err = st.IsRangePermitted(ai, dr.Key, dr.RangeEnd)
				}
				if deny(dr.Key, dr.RangeEnd, err) {
					return true
				}
			case op.GetRequestTxn() != nil:
				if s.locateTxnDenial(ev, st, ai, op.GetRequestTxn()) {
					return true
				}
			}
		}
	}
	return false
}

// locatePutDenial sets ev to the key of put r, or to the key attached to
// its lease, that ai may not write (or read, for prev_kv); it reports
// whether it found one.
func (s *Server) locatePutDenial(ev *audit.Event, st *auth.Store, ai auth.AuthInfo, r *pb.PutRequest) bool {
	err := st.IsPutPermitted(ai, r.Key)
	if err == nil && r.PrevKv {
		err = st.IsRangePermitted(ai, r.Key, nil)
	}
	if err != nil {
		ev.Key, ev.RangeEnd, ev.Lease = r.Key, nil, r.Lease
		return true
	}
	return s.locateLeaseDenial(ev, st, ai, r.Lease, true)
}

// locateLeaseDenial sets ev to the first key attached to lease id that ai
// may not write (write) or read; it reports whether it found one.
func (s *Server) locateLeaseDenial(ev *audit.Event, st *auth.Store, ai auth.AuthInfo, id int64, write bool) bool {
	if id == 0 || st.IsAdminPermitted(ai) == nil {
		return false
	}
	keys, err := s.leases.lessor.Keys(id)
	if err != nil {
		return false
	}
	for _, k := range keys {
		if write {
			err = st.IsPutPermitted(ai, k)
		} else {
			err = st.IsRangePermitted(ai, k, nil)
		}
		if err != nil {
			ev.Key, ev.RangeEnd, ev.Lease = k, nil, id
			return true
		}
	}
	return false
}

// firstTxnRange is the key range of txn r's first compare or op (nested
// txns included), or nothing for an empty txn.
func firstTxnRange(r *pb.TxnRequest) (key, end []byte) {
	if len(r.Compare) > 0 {
		return r.Compare[0].Key, r.Compare[0].RangeEnd
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch {
			case op.GetRequestRange() != nil:
				return op.GetRequestRange().Key, op.GetRequestRange().RangeEnd
			case op.GetRequestPut() != nil:
				return op.GetRequestPut().Key, nil
			case op.GetRequestDeleteRange() != nil:
				return op.GetRequestDeleteRange().Key, op.GetRequestDeleteRange().RangeEnd
			case op.GetRequestTxn() != nil:
				if k, e := firstTxnRange(op.GetRequestTxn()); k != nil {
					return k, e
				}
			}
		}
	}
	return nil, nil
}
