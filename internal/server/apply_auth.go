package server

import (
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/storage"
)

// The auth side of the apply loop, as etcd's apply does it: every entry
// carries the user and auth revision its proposer resolved (the request
// header's Username and AuthRevision); the admin requests need role root,
// the key requests the user's permissions at an auth revision no older
// than the store's, checked here again, so a permission revoked after the
// API looked refuses the request on every member alike
// (auth.ErrAuthOldRevision, which clientv3 retries).

// entryUser is who an entry runs as.
func entryUser(r *pb.InternalRaftRequest) auth.AuthInfo {
	h := r.GetHeader()
	return auth.AuthInfo{Username: h.GetUsername(), Revision: h.GetAuthRevision()}
}

// checkEntry makes the checks etcd's apply makes before it applies r: nil,
// or the error to answer r with.
func (s *Server) checkEntry(b *storage.Batch, r *pb.InternalRaftRequest) error {
	if !s.auth.enabled() {
		return nil
	}
	st := s.auth.st()
	ai := entryUser(r)
	if auth.NeedsAdmin(r) {
		return st.IsAdminPermitted(ai)
	}
	switch {
	case r.Put != nil:
		return s.checkPut(b, st, ai, r.Put)
	case r.DeleteRange != nil:
		return checkDelete(st, ai, r.DeleteRange)
	case r.Txn != nil:
		return s.checkTxn(b, st, ai, r.Txn)
	case r.LeaseRevoke != nil:
		return s.checkLeaseKeys(b, st, ai, r.LeaseRevoke.ID)
	case r.AuthUserGet != nil:
		return st.CanGetUser(ai, r.AuthUserGet.Name)
	case r.AuthRoleGet != nil:
		return st.CanGetRole(ai, r.AuthRoleGet.Role)
	}
	return nil
}

// checkPut is etcd's check of a put: write permission on the key, on every
// key attached to the lease it names (a user may not attach to a lease
// keys it could not revoke), and read permission for prev_kv.
func (s *Server) checkPut(b *storage.Batch, st *auth.Store, ai auth.AuthInfo, r *pb.PutRequest) error {
	if err := st.IsPutPermitted(ai, r.Key); err != nil {
		return err
	}
	if err := s.checkLeaseKeys(b, st, ai, r.Lease); err != nil {
		return err
	}
	if r.PrevKv {
		return st.IsRangePermitted(ai, r.Key, nil)
	}
	return nil
}

func checkDelete(st *auth.Store, ai auth.AuthInfo, r *pb.DeleteRangeRequest) error {
	if err := st.IsDeleteRangePermitted(ai, r.Key, r.RangeEnd); err != nil {
		return err
	}
	if r.PrevKv {
		return st.IsRangePermitted(ai, r.Key, r.RangeEnd)
	}
	return nil
}

// checkTxn checks every key a txn touches: its compares, both branches and
// nested txns, whichever branch would run. b is the apply batch (nil on
// the read path).
func (s *Server) checkTxn(b *storage.Batch, st *auth.Store, ai auth.AuthInfo, r *pb.TxnRequest) error {
	for _, c := range r.Compare {
		if err := st.IsRangePermitted(ai, c.Key, c.RangeEnd); err != nil {
			return err
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			var err error
			switch {
			case op.GetRequestRange() != nil:
				rr := op.GetRequestRange()
				err = st.IsRangePermitted(ai, rr.Key, rr.RangeEnd)
			case op.GetRequestPut() != nil:
				err = s.checkPut(b, st, ai, op.GetRequestPut())
			case op.GetRequestDeleteRange() != nil:
				dr := op.GetRequestDeleteRange()
				if dr.PrevKv {
					err = st.IsRangePermitted(ai, dr.Key, dr.RangeEnd)
				}
				if err == nil {
					err = st.IsDeleteRangePermitted(ai, dr.Key, dr.RangeEnd)
				}
			case op.GetRequestTxn() != nil:
				err = s.checkTxn(b, st, ai, op.GetRequestTxn())
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// checkLeaseKeys requires write permission on every key attached to lease
// id (none needed for root, or for no lease), as the apply batch b sees
// them: a key attached by an earlier entry of the same batch counts.
func (s *Server) checkLeaseKeys(b *storage.Batch, st *auth.Store, ai auth.AuthInfo, id int64) error {
	if id == 0 || st.IsAdminPermitted(ai) == nil {
		return nil
	}
	if _, ok := s.leases.lessor.Lookup(id); !ok {
		return nil
	}
	var keys [][]byte
	var err error
	if b != nil {
		keys, err = s.leases.lessor.KeysIn(b, id)
	} else {
		keys, err = s.leases.lessor.Keys(id)
	}
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := st.IsPutPermitted(ai, k); err != nil {
			return err
		}
	}
	return nil
}

// applyAuth applies an auth request of the entry at index into b. It
// reports ok=false for a request that is not one.
func (s *Server) applyAuth(w *mvcc.Write, b *storage.Batch, r *pb.InternalRaftRequest, index uint64) (res result, ok bool, err error) {
	st := s.auth.st()
	bw := batchWriter{b}
	var resp response
	var aerr error
	switch {
	case r.Authenticate != nil:
		resp, aerr = st.Authenticate(r.Authenticate, index)
	case r.AuthEnable != nil:
		resp, aerr = st.AuthEnable(bw, r.AuthEnable)
		s.auth.on.Store(st.IsEnabled())
	case r.AuthDisable != nil:
		resp, aerr = st.AuthDisable(bw, r.AuthDisable)
		s.auth.on.Store(st.IsEnabled())
	case r.AuthStatus != nil:
		resp, aerr = st.AuthStatus(r.AuthStatus)
	case r.AuthUserAdd != nil:
		resp, aerr = st.UserAdd(bw, r.AuthUserAdd)
	case r.AuthUserDelete != nil:
		resp, aerr = st.UserDelete(bw, r.AuthUserDelete)
	case r.AuthUserChangePassword != nil:
		resp, aerr = st.UserChangePassword(bw, r.AuthUserChangePassword)
	case r.AuthUserGrantRole != nil:
		resp, aerr = st.UserGrantRole(bw, r.AuthUserGrantRole)
	case r.AuthUserRevokeRole != nil:
		resp, aerr = st.UserRevokeRole(bw, r.AuthUserRevokeRole)
	case r.AuthUserGet != nil:
		resp, aerr = st.UserGet(r.AuthUserGet)
	case r.AuthUserList != nil:
		resp, aerr = st.UserList(r.AuthUserList)
	case r.AuthRoleAdd != nil:
		resp, aerr = st.RoleAdd(bw, r.AuthRoleAdd)
	case r.AuthRoleDelete != nil:
		resp, aerr = st.RoleDelete(bw, r.AuthRoleDelete)
	case r.AuthRoleGrantPermission != nil:
		resp, aerr = st.RoleGrantPermission(bw, r.AuthRoleGrantPermission)
	case r.AuthRoleRevokePermission != nil:
		resp, aerr = st.RoleRevokePermission(bw, r.AuthRoleRevokePermission)
	case r.AuthRoleGet != nil:
		resp, aerr = st.RoleGet(r.AuthRoleGet)
	case r.AuthRoleList != nil:
		resp, aerr = st.RoleList(r.AuthRoleList)
	default:
		return result{}, false, nil
	}
	if aerr != nil {
		if isAuthRequestError(aerr) {
			return result{err: aerr}, true, nil
		}
		return result{}, true, aerr
	}
	s.auditChange(r, index)
	h := resp.GetHeader()
	if h == nil {
		h = &pb.ResponseHeader{}
		setHeader(resp, h)
	}
	h.Revision = w.Rev()
	return result{resp: resp}, true, nil
}

// authRequestErrors are the auth store's answers to a request; any other
// error from an apply method is the Writer's, which is fatal.
var authRequestErrors = []error{
	auth.ErrRootUserNotExist, auth.ErrRootRoleNotExist, auth.ErrUserAlreadyExist,
	auth.ErrUserEmpty, auth.ErrUserNotFound, auth.ErrRoleAlreadyExist, auth.ErrRoleNotFound,
	auth.ErrRoleEmpty, auth.ErrAuthFailed, auth.ErrPermissionNotGiven, auth.ErrPermissionDenied,
	auth.ErrRoleNotGranted, auth.ErrPermissionNotGranted, auth.ErrAuthNotEnabled,
	auth.ErrInvalidAuthToken, auth.ErrInvalidAuthMgmt, auth.ErrAuthOldRevision,
	auth.ErrNoPasswordUser, auth.ErrPlainPassword, auth.ErrVerifyOnly,
}

func isAuthRequestError(err error) bool {
	for _, e := range authRequestErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// setHeader sets the header field of an auth response, which the auth
// store leaves empty.
func setHeader(resp response, h *pb.ResponseHeader) {
	m := resp.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("header")
	m.Set(fd, protoreflect.ValueOfMessage(h.ProtoReflect()))
}
