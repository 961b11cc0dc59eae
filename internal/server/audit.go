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
// admin and user checks, watches, Authenticate, and proposals whose
// apply refused them). With the log off, s.auth.audit is nil and each
// hook costs a nil check.

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
		ev.Method = name
		return false
	})
	var perm *authpb.Permission
	switch {
	case r.Put != nil:
		ev.Key = r.Put.Key
	case r.DeleteRange != nil:
		ev.Key, ev.RangeEnd = r.DeleteRange.Key, r.DeleteRange.RangeEnd
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
	s.auth.refused(describe(r), user, err, false)
}
