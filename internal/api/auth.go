package api

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/lockelect"
	"github.com/cairn-db/cairn/internal/server"
)

// AuthBackend is the auth part of Backend: etcd's Auth service, and the
// two checks etcd's API layer makes before it passes some requests on.
// Requests carry their credentials in the context (server.WithCredentials,
// which the interceptors here call), and the backend resolves them.
type AuthBackend interface {
	AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error)
	AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error)
	AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error)
	Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error)
	UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error)
	UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error)
	UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error)
	UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error)
	UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error)
	UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error)
	UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error)
	RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error)
	RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error)
	RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error)
	RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error)
	RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error)
	RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error)

	// IsAdmin refuses a caller who may not administer the cluster (not
	// role root while auth is enabled).
	IsAdmin(ctx context.Context) error
	// RequireUser refuses a request that names no user while auth is
	// enabled.
	RequireUser(ctx context.Context) error
	// WatchPermitted refuses a watch of [key, rangeEnd) its caller may not
	// read.
	WatchPermitted(ctx context.Context, key, rangeEnd []byte) error
}

// watchCancelReason is etcd's cancel reason for a watch create refused by
// auth.
func watchCancelReason(err error) string {
	switch {
	case errors.Is(err, auth.ErrInvalidAuthToken):
		return rpctypes.ErrGRPCInvalidAuthToken.Error()
	case errors.Is(err, auth.ErrAuthOldRevision):
		return rpctypes.ErrGRPCAuthOldRevision.Error()
	case errors.Is(err, auth.ErrUserEmpty):
		return rpctypes.ErrGRPCUserEmpty.Error()
	}
	return rpctypes.ErrGRPCPermissionDenied.Error()
}

// authService is etcd's Auth service: every call goes to the backend,
// whose errors are mapped to etcd's statuses.
type authService struct {
	pb.UnimplementedAuthServer
	b Backend
}

// authCall runs one Auth RPC on the backend and maps its error.
func authCall[Req, Resp any](ctx context.Context, r Req, call func(context.Context, Req) (Resp, error)) (Resp, error) {
	resp, err := call(ctx, r)
	if err != nil {
		var zero Resp
		return zero, toGRPCError(err)
	}
	return resp, nil
}

func (a *authService) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return authCall(ctx, r, a.b.AuthEnable)
}

func (a *authService) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return authCall(ctx, r, a.b.AuthDisable)
}

func (a *authService) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return authCall(ctx, r, a.b.AuthStatus)
}

func (a *authService) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	return authCall(ctx, r, a.b.Authenticate)
}

func (a *authService) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	return authCall(ctx, r, a.b.UserAdd)
}

func (a *authService) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	return authCall(ctx, r, a.b.UserGet)
}

func (a *authService) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	return authCall(ctx, r, a.b.UserList)
}

func (a *authService) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return authCall(ctx, r, a.b.UserDelete)
}

func (a *authService) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	return authCall(ctx, r, a.b.UserChangePassword)
}

func (a *authService) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return authCall(ctx, r, a.b.UserGrantRole)
}

func (a *authService) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return authCall(ctx, r, a.b.UserRevokeRole)
}

func (a *authService) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return authCall(ctx, r, a.b.RoleAdd)
}

func (a *authService) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	return authCall(ctx, r, a.b.RoleGet)
}

func (a *authService) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	return authCall(ctx, r, a.b.RoleList)
}

func (a *authService) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return authCall(ctx, r, a.b.RoleDelete)
}

func (a *authService) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return authCall(ctx, r, a.b.RoleGrantPermission)
}

func (a *authService) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return authCall(ctx, r, a.b.RoleRevokePermission)
}

// withCredentials returns ctx carrying the credentials of a call to method:
// the token of its "token" metadata (clientv3's) or "authorization" (the
// gateway's), and the CN of its verified client certificate. As etcd does,
// the CN of a request that came through a gRPC gateway
// (grpcgateway-accept metadata) is ignored: that certificate is the
// gateway's, not the user's.
//
// The Lock and Election services make their calls through the member's
// own client, over a socket without TLS, where etcd calls in process with
// the caller's context. So that those calls run as the caller, the CN of
// a Lock or Election call is put in its metadata under
// lockelect.CallerCNKey, which the services pass on, replacing whatever a
// client sent there; that key is read only on calls from the member's own
// client (fromSelf), never from the network.
func withCredentials(ctx context.Context, method string) context.Context {
	token := firstValue(ctx, rpctypes.TokenFieldNameGRPC)
	if token == "" {
		token = firstValue(ctx, rpctypes.TokenFieldNameSwagger)
	}
	var cn string
	var cert bool
	if fromSelf(ctx) {
		if v := metadata.ValueFromIncomingContext(ctx, lockelect.CallerCNKey); len(v) > 0 {
			cn, cert = v[0], true
		}
	} else {
		cn, cert = verifiedCN(ctx)
		if cert && firstValue(ctx, "grpcgateway-accept") != "" {
			cn, cert = "", false
		}
		if strings.HasPrefix(method, "/v3lockpb.Lock/") || strings.HasPrefix(method, "/v3electionpb.Election/") {
			ctx = withCallerCN(ctx, cn, cert)
		}
	}
	if cert {
		return server.WithCertCredentials(ctx, token, cn)
	}
	return server.WithCredentials(ctx, token, "")
}

// verifiedCN returns the common name of the call's verified client
// certificate, and whether there is one (the name may be empty).
func verifiedCN(ctx context.Context) (cn string, ok bool) {
	p, found := peer.FromContext(ctx)
	if !found || p.AuthInfo == nil {
		return "", false
	}
	ti, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS {
		return "", false
	}
	for _, chain := range ti.State.VerifiedChains {
		if len(chain) > 0 {
			return chain[0].Subject.CommonName, true
		}
	}
	return "", false
}

// withCallerCN sets lockelect.CallerCNKey in ctx's incoming metadata to
// cn when the call has a verified certificate, and removes it otherwise.
// The metadata is copied only when it changes.
func withCallerCN(ctx context.Context, cn string, cert bool) context.Context {
	if !cert && len(metadata.ValueFromIncomingContext(ctx, lockelect.CallerCNKey)) == 0 {
		return ctx
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if md == nil {
		md = metadata.MD{}
	}
	if cert {
		md.Set(lockelect.CallerCNKey, cn)
	} else {
		md.Delete(lockelect.CallerCNKey)
	}
	return metadata.NewIncomingContext(ctx, md)
}

func firstValue(ctx context.Context, key string) string {
	if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// accessCheck is the check etcd's API layer makes before a method (by its
// full gRPC name) reaches the server: role root for cluster changes,
// compaction and most maintenance, a user at all for Status, MemberList
// and listing alarms. req is the request (nil for a stream).
func accessCheck(ctx context.Context, b Backend, method string, req any) error {
	switch method {
	case "/etcdserverpb.Cluster/MemberAdd", "/etcdserverpb.Cluster/MemberRemove",
		"/etcdserverpb.Cluster/MemberUpdate", "/etcdserverpb.Cluster/MemberPromote",
		"/etcdserverpb.KV/Compact",
		"/etcdserverpb.Maintenance/Defragment", "/etcdserverpb.Maintenance/Hash",
		"/etcdserverpb.Maintenance/HashKV", "/etcdserverpb.Maintenance/Snapshot",
		"/etcdserverpb.Maintenance/MoveLeader", "/etcdserverpb.Maintenance/Downgrade":
		return b.IsAdmin(ctx)
	case "/etcdserverpb.Maintenance/Status", "/etcdserverpb.Cluster/MemberList":
		return b.RequireUser(ctx)
	case "/etcdserverpb.Maintenance/Alarm":
		if r, ok := req.(*pb.AlarmRequest); ok && r.GetAction() == pb.AlarmRequest_GET {
			return b.RequireUser(ctx)
		}
		return b.IsAdmin(ctx)
	}
	return nil
}

// authCheck and authStream put every request's credentials into its
// context and make accessCheck's checks, answering a refusal with etcd's
// status; authCheck returns the context with the credentials.
func authCheck(ctx context.Context, b Backend, method string, req any) (context.Context, error) {
	ctx = withCredentials(ctx, method)
	if err := accessCheck(ctx, b, method, req); err != nil {
		return nil, toGRPCError(err)
	}
	return ctx, nil
}

func authStream(b Backend) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := withCredentials(ss.Context(), info.FullMethod)
		if err := accessCheck(ctx, b, info.FullMethod, nil); err != nil {
			return toGRPCError(err)
		}
		return handler(srv, &credentialedStream{ServerStream: ss, ctx: ctx})
	}
}

// credentialedStream is a stream whose context carries its credentials.
type credentialedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *credentialedStream) Context() context.Context { return s.ctx }

// gatewayMethods names the gRPC methods behind the gateway's paths that
// accessCheck knows; the gateway calls the services directly, past the
// interceptors, so gatewayAuth makes the same checks.
var gatewayMethods = map[string]string{
	"/v3/kv/compaction":                   "/etcdserverpb.KV/Compact",
	"/v3/maintenance/defragment":          "/etcdserverpb.Maintenance/Defragment",
	"/v3/maintenance/hash":                "/etcdserverpb.Maintenance/Hash",
	"/v3/maintenance/hashkv":              "/etcdserverpb.Maintenance/HashKV",
	"/v3/maintenance/status":              "/etcdserverpb.Maintenance/Status",
	"/v3/maintenance/alarm":               "/etcdserverpb.Maintenance/Alarm",
	"/v3/maintenance/transfer-leadership": "/etcdserverpb.Maintenance/MoveLeader",
	"/v3/maintenance/downgrade":           "/etcdserverpb.Maintenance/Downgrade",
	"/v3/maintenance/snapshot":            "/etcdserverpb.Maintenance/Snapshot",
}

// gatewayAuth is the gateway's middleware for auth: the request's
// "Authorization" header is its token, as in etcd's gateway, and the
// checks of accessCheck apply. A refusal is answered as the gateway
// answers any error.
func gatewayAuth(b Backend, mux **gw.ServeMux) gw.Middleware {
	return func(next gw.HandlerFunc) gw.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
			ctx := server.WithCredentials(r.Context(), r.Header.Get("Authorization"), "")
			r = r.WithContext(ctx)
			if method, ok := gatewayMethods[r.URL.Path]; ok {
				var req any
				if method == "/etcdserverpb.Maintenance/Alarm" {
					body, _ := io.ReadAll(r.Body)
					r.Body = io.NopCloser(bytes.NewReader(body))
					ar := &pb.AlarmRequest{}
					if protojson.Unmarshal(body, ar) == nil {
						req = ar
					}
				}
				if err := accessCheck(ctx, b, method, req); err != nil {
					gw.HTTPError(ctx, *mux, &gw.JSONPb{}, w, r, toGRPCError(err))
					return
				}
			}
			next(w, r, params)
		}
	}
}

// The auth store's errors as etcd's statuses, for errors.go's table.
var authGRPCErrors = []struct {
	err  error
	grpc error
}{
	{auth.ErrRootUserNotExist, rpctypes.ErrGRPCRootUserNotExist},
	{auth.ErrRootRoleNotExist, rpctypes.ErrGRPCRootRoleNotExist},
	{auth.ErrUserAlreadyExist, rpctypes.ErrGRPCUserAlreadyExist},
	{auth.ErrUserEmpty, rpctypes.ErrGRPCUserEmpty},
	{auth.ErrUserNotFound, rpctypes.ErrGRPCUserNotFound},
	{auth.ErrRoleAlreadyExist, rpctypes.ErrGRPCRoleAlreadyExist},
	{auth.ErrRoleNotFound, rpctypes.ErrGRPCRoleNotFound},
	{auth.ErrRoleEmpty, rpctypes.ErrGRPCRoleEmpty},
	{auth.ErrAuthFailed, rpctypes.ErrGRPCAuthFailed},
	{auth.ErrPermissionNotGiven, rpctypes.ErrGRPCPermissionNotGiven},
	{auth.ErrPermissionDenied, rpctypes.ErrGRPCPermissionDenied},
	{auth.ErrRoleNotGranted, rpctypes.ErrGRPCRoleNotGranted},
	{auth.ErrPermissionNotGranted, rpctypes.ErrGRPCPermissionNotGranted},
	{auth.ErrAuthNotEnabled, rpctypes.ErrGRPCAuthNotEnabled},
	{auth.ErrInvalidAuthToken, rpctypes.ErrGRPCInvalidAuthToken},
	{auth.ErrInvalidAuthMgmt, rpctypes.ErrGRPCInvalidAuthMgmt},
	{auth.ErrAuthOldRevision, rpctypes.ErrGRPCAuthOldRevision},
}
