package server

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/audit"
	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/storage"
)

// authority is the member's auth component: the auth store (internal/auth)
// loaded from the engine's 'a' keyspace, the token provider, and the
// bcrypt work the API path does before proposing (hashing new passwords,
// checking Authenticate's). The apply loop changes the store; everything
// else only asks it questions, so those are safe for concurrent use.
//
// A snapshot install replaces the store with one loaded from the new
// state (reload); store is an atomic pointer so that a check in flight
// finishes against the old one and then sees the new revision.
type authority struct {
	store atomic.Pointer[auth.Store]
	// on mirrors the store's enabled flag, so that the request path of a
	// member without auth costs one atomic load, not the store's locks.
	// The apply loop sets it after AuthEnable, AuthDisable and reload.
	on     atomic.Bool
	tokens auth.TokenProvider
	cost   int
	// bcrypt bounds the concurrent bcrypt work (bcryptSlots), so an
	// Authenticate flood queues here instead of taking every core from
	// the other requests.
	bcrypt chan struct{}
	// clientCertAuth: a verified client certificate's CN names the user of
	// a request that carries no token.
	clientCertAuth bool
	// audit is the audit log (nil: off), and member the name its lines
	// carry.
	audit  *audit.Log
	member string
}

// authCredentials is what a request brought to prove who it is: a token
// from its metadata and, with client-certificate auth, the CN of its
// verified certificate.
type authCredentials struct {
	token string
	// cert reports a verified client certificate, and cn is its common
	// name, which may be empty.
	cert bool
	cn   string
	// root marks the member's own requests that run as root whatever the
	// permissions (the leader revoking expired leases, as etcd does).
	root bool
}

// asRoot returns ctx for a request the member makes on its own behalf as
// user root.
func asRoot(ctx context.Context) context.Context {
	return context.WithValue(ctx, credentialsKey{}, authCredentials{root: true})
}

type credentialsKey struct{}

// WithCredentials returns ctx carrying a request's credentials: the token
// from its "token" (or "authorization") metadata and the common name of
// its verified client certificate ("" for none). The api layer calls it
// for every request; the server resolves the credentials only when a
// request needs a user (as etcd does), so Authenticate and AuthStatus work
// with a stale token.
func WithCredentials(ctx context.Context, token, commonName string) context.Context {
	if token == "" && commonName == "" {
		return ctx
	}
	return context.WithValue(ctx, credentialsKey{}, authCredentials{token: token, cert: commonName != "", cn: commonName})
}

// WithCertCredentials is WithCredentials for a request that presented a
// verified client certificate, whose common name may be empty. As in
// etcd, with client-certificate auth and no token such a request runs as
// the user of that name even when it is empty: a name no user has, so its
// key operations are refused with permission denied, where a request with
// no certificate at all gets "user name is empty".
func WithCertCredentials(ctx context.Context, token, commonName string) context.Context {
	return context.WithValue(ctx, credentialsKey{}, authCredentials{token: token, cert: true, cn: commonName})
}

// newAuthority builds the token provider the config names and loads the
// auth store from eng.
func newAuthority(s *Server) (*authority, error) {
	cfg := s.cfg
	a := &authority{
		cost:           cfg.BcryptCost,
		bcrypt:         make(chan struct{}, bcryptSlots(runtime.GOMAXPROCS(0))),
		clientCertAuth: cfg.ClientCertAuth,
	}
	now := s.clock.Now
	if s.knobs.authNow != nil {
		now = s.knobs.authNow
	}
	tokens, err := auth.NewTokenProvider(cfg.AuthToken, auth.TokenConfig{
		TTL: cfg.AuthTokenTTL,
		Now: now,
		WaitApplied: func(ctx context.Context, index uint64) bool {
			return s.waitApplied(ctx, index)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("server: --auth-token %q: %w", cfg.AuthToken, err)
	}
	a.tokens = tokens
	if err := a.reload(s.eng); err != nil {
		return nil, err
	}
	if cfg.AuditLog != "" {
		a.member = cfg.Name
		a.audit, err = audit.Open(audit.Options{
			Path: cfg.AuditLog, MaxBytes: cfg.AuditLogMaxBytes, MaxFiles: cfg.AuditLogMaxFiles,
			Registerer: cfg.Metrics, Now: s.clock.Now,
		})
		if err != nil {
			return nil, fmt.Errorf("server: --audit-log: %w", err)
		}
	}
	return a, nil
}

// reload replaces the store by the one persisted in eng: at startup and
// after a snapshot install. Only the apply loop (or New) calls it.
func (a *authority) reload(eng *storage.Engine) error {
	st, err := auth.Load(engineReader{eng}, auth.Options{Tokens: a.tokens})
	if err != nil {
		return fmt.Errorf("server: load auth state: %w", err)
	}
	if !st.IsEnabled() {
		a.tokens.Disable()
	}
	a.store.Store(st)
	a.on.Store(st.IsEnabled())
	return nil
}

func (a *authority) st() *auth.Store { return a.store.Load() }

// enabled reports whether auth is enabled, as of the last applied entry.
func (a *authority) enabled() bool { return a.on.Load() }

// info resolves the credentials ctx carries: nil while auth is disabled or
// when the request brought none; ErrInvalidAuthToken (auth's) for a token
// that is unknown, expired or forged. A request without a token but with a
// verified certificate runs as the certificate's CN (empty or not, as in
// etcd), at the current revision, when client-certificate auth is on.
func (a *authority) info(ctx context.Context) (*auth.AuthInfo, error) {
	if !a.enabled() {
		return nil, nil
	}
	st := a.st()
	c, _ := ctx.Value(credentialsKey{}).(authCredentials)
	if c.root {
		return &auth.AuthInfo{Username: "root", Revision: st.Revision()}, nil
	}
	if c.token != "" {
		return st.TokenInfo(ctx, c.token)
	}
	if a.clientCertAuth && c.cert {
		return &auth.AuthInfo{Username: c.cn, Revision: st.Revision()}, nil
	}
	return nil, nil
}

// infoOrEmpty is info with "no user" as the zero AuthInfo, the form the
// checks take.
func (a *authority) infoOrEmpty(ctx context.Context) (auth.AuthInfo, error) {
	ai, err := a.info(ctx)
	if err != nil || ai == nil {
		return auth.AuthInfo{}, err
	}
	return *ai, nil
}

// requireUser is etcd's requireAuthInfo: with auth enabled, a request must
// name a user (ErrUserEmpty) with a valid token.
func (a *authority) requireUser(ctx context.Context) error {
	if !a.enabled() {
		return nil
	}
	ai, err := a.info(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		return auth.ErrUserEmpty
	}
	return nil
}

// admin is etcd's admin check on the API path: the caller must hold role
// root while auth is enabled.
func (a *authority) admin(ctx context.Context) error {
	ai, err := a.infoOrEmpty(ctx)
	if err != nil {
		return err
	}
	return a.st().IsAdminPermitted(ai)
}

// bcryptSlots is how many password hashes or checks may run at once on
// procs cores: one core fewer than there are, so that a flood of
// Authenticate calls (each a bcrypt comparison of tens of milliseconds at
// the default cost) always leaves a core to the other requests; one on a
// single core. etcd runs them unbounded, so its other requests then share
// every core with the flood; callers past the bound queue, as long as
// their context allows (etcd's clients see the same: slow logins, never a
// refusal for load).
func bcryptSlots(procs int) int { return max(1, procs-1) }

// withBcrypt runs fn holding one of the bcrypt slots, or fails with the
// server's ErrCanceled/ErrTimeout if ctx ends while it waits.
func (a *authority) withBcrypt(ctx context.Context, fn func() error) error {
	select {
	case a.bcrypt <- struct{}{}:
	case <-ctx.Done():
		return ctxErr(ctx.Err())
	}
	defer func() { <-a.bcrypt }()
	return fn()
}

// checkedRead is etcd's doSerialize: chk runs against the caller's user
// before read (a refusal goes to the audit log as *ev, which chk may
// complete with the key range it refused), and the read is refused with
// ErrAuthOldRevision if the auth revision moved while it ran.
func (a *authority) checkedRead(ctx context.Context, ev *audit.Event, chk func(st *auth.Store, ai auth.AuthInfo) error, read func() error) error {
	if !a.enabled() {
		return read()
	}
	ai, err := a.infoOrEmpty(ctx)
	if err != nil {
		a.refused(*ev, "", err, false)
		return err
	}
	st := a.st()
	if err := chk(st, ai); err != nil {
		a.refused(*ev, ai.Username, err, false)
		return err
	}
	if err := read(); err != nil {
		return err
	}
	if ai.Revision != 0 && ai.Revision != a.st().Revision() {
		return auth.ErrAuthOldRevision
	}
	return nil
}

// waitApplied blocks until index is applied here, or ctx ends or the
// request timeout passes (false); a simple token names the entry that
// issued it, which a follower may not have applied yet when the client
// presents the token.
func (s *Server) waitApplied(ctx context.Context, index uint64) bool {
	if s.applied.Load() >= index {
		return true
	}
	timeout := s.clock.After(s.cfg.RequestTimeout)
	for {
		ch := s.applied.next()
		if s.applied.Load() >= index {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-timeout:
			return false
		case <-s.life.stopc:
			return false
		}
	}
}

// engineReader reads the auth keyspace of a committed engine.
type engineReader struct{ eng *storage.Engine }

func (r engineReader) Scan(prefix []byte, fn func(key, value []byte) error) error {
	upper := append([]byte(nil), prefix...)
	upper[len(upper)-1]++
	it, err := r.eng.DB().NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return err
	}
	return it.Close()
}

// batchWriter writes the auth state's changes into the apply batch.
type batchWriter struct{ b *storage.Batch }

func (w batchWriter) Put(key, value []byte) error { return w.b.Set(key, value, nil) }
func (w batchWriter) Delete(key []byte) error     { return w.b.Delete(key, nil) }

// IsAdmin refuses a caller that may not manage the cluster: with auth
// enabled, anyone but a holder of role root (auth.ErrUserEmpty without a
// user, auth.ErrUserNotFound, auth.ErrPermissionDenied, or
// auth.ErrInvalidAuthToken). The api calls it before member changes,
// alarm changes, defragmentation, hashes, snapshots and leader moves, as
// etcd's API layer does. Safe for concurrent use.
func (s *Server) IsAdmin(ctx context.Context) error {
	err := s.auth.admin(ctx)
	if err != nil && s.auth.audit != nil {
		s.auth.refused(audit.Event{Method: methodOf(ctx, "admin")}, s.auth.userOf(ctx), err, true)
	}
	return err
}

// RequireUser refuses a request that names no user while auth is enabled
// (auth.ErrUserEmpty, or auth.ErrInvalidAuthToken for a bad token), as
// etcd's requireAuthInfo does (Status, alarm listing). Safe for concurrent
// use.
func (s *Server) RequireUser(ctx context.Context) error { return s.requireUserFor(ctx, "", 0) }

// requireUserFor is RequireUser for a request of method (its name in the
// audit log when ctx names no gRPC method) about lease (0: none).
func (s *Server) requireUserFor(ctx context.Context, method string, lease int64) error {
	err := s.auth.requireUser(ctx)
	if err != nil && s.auth.audit != nil {
		s.auth.refused(audit.Event{Method: methodOf(ctx, method), Lease: lease}, "", err, false)
	}
	return err
}

// AuthEnabled reports whether auth is enabled on this member now.
func (s *Server) AuthEnabled() bool { return s.auth.enabled() }

// WatchPermitted reports whether the caller may watch [key, rangeEnd):
// nil, or the reason not (auth.ErrUserEmpty, auth.ErrPermissionDenied,
// auth.ErrInvalidAuthToken, ...), as etcd checks a watch at create. Safe
// for concurrent use.
func (s *Server) WatchPermitted(ctx context.Context, key, rangeEnd []byte) error {
	ai, err := s.auth.infoOrEmpty(ctx)
	if err == nil {
		err = s.auth.st().IsRangePermitted(ai, key, rangeEnd)
	}
	if err != nil {
		s.auth.refused(audit.Event{Method: "Watch", Key: key, RangeEnd: rangeEnd}, ai.Username, err, false)
	}
	return err
}

// Authenticate checks a user's password and issues a token through raft,
// as etcd does: the password is checked here (bcrypt, in one of
// bcryptSlots slots) after a read-index round, the proposal carries no password, and
// apply issues the token. If the user changed between the check and the
// apply the check is repeated. Errors: auth.ErrAuthNotEnabled,
// auth.ErrAuthFailed, auth.ErrNoPasswordUser and the server's.
func (s *Server) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	if err := s.reads.wait(ctx); err != nil {
		return nil, err
	}
	for {
		var rev uint64
		err := s.auth.withBcrypt(ctx, func() (err error) {
			rev, err = s.auth.st().CheckPassword(r.Name, r.Password)
			return err
		})
		if err != nil {
			if !errors.Is(err, auth.ErrAuthNotEnabled) {
				s.lg.Warn("invalid authentication was requested", "user", r.Name, "err", err)
				s.auth.refused(audit.Event{Method: "Authenticate"}, r.Name, err, false)
			}
			return nil, err
		}
		prefix, err := s.auth.tokens.NewPrefix()
		if err != nil {
			return nil, err
		}
		req := &pb.InternalRaftRequest{Authenticate: &pb.InternalAuthenticateRequest{Name: r.Name, SimpleToken: prefix}}
		resp, err := proposed[*pb.AuthenticateResponse](s, ctx, req, 0, nil)
		if err != nil {
			return nil, err
		}
		if rev == s.auth.st().Revision() {
			return resp, nil
		}
		// The user or their roles changed after the password check: the
		// password may no longer be theirs. Check again (etcd does too).
	}
}

// authWrite proposes an auth request and returns its response.
func authWrite[T response](s *Server, ctx context.Context, r *pb.InternalRaftRequest) (T, error) {
	return write[T](s, ctx, r, 0)
}

// AuthEnable turns auth on through raft. Errors: auth.ErrRootUserNotExist,
// auth.ErrRootRoleNotExist, the admin check's, and the server's.
func (s *Server) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return authWrite[*pb.AuthEnableResponse](s, ctx, &pb.InternalRaftRequest{AuthEnable: r})
}

// AuthDisable turns auth off through raft (root only).
func (s *Server) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return authWrite[*pb.AuthDisableResponse](s, ctx, &pb.InternalRaftRequest{AuthDisable: r})
}

// AuthStatus reports whether auth is enabled and the auth revision,
// through raft as etcd does, so the answer is linearizable.
func (s *Server) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return authWrite[*pb.AuthStatusResponse](s, ctx, &pb.InternalRaftRequest{AuthStatus: r})
}

// UserAdd adds a user through raft; the password is hashed here at
// --bcrypt-cost, so the log never holds it in plain text.
func (s *Server) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	r = cloneMsg(r)
	if r.HashedPassword == "" {
		if err := s.auth.withBcrypt(ctx, func() error { return auth.HashUserAdd(r, s.auth.cost) }); err != nil {
			return nil, err
		}
	}
	return authWrite[*pb.AuthUserAddResponse](s, ctx, &pb.InternalRaftRequest{AuthUserAdd: r})
}

// UserDelete deletes a user through raft.
func (s *Server) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return authWrite[*pb.AuthUserDeleteResponse](s, ctx, &pb.InternalRaftRequest{AuthUserDelete: r})
}

// UserChangePassword changes a user's password through raft, hashed here.
func (s *Server) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	r = cloneMsg(r)
	if r.HashedPassword == "" {
		if err := s.auth.withBcrypt(ctx, func() error { return auth.HashChangePassword(r, s.auth.cost) }); err != nil {
			return nil, err
		}
	}
	return authWrite[*pb.AuthUserChangePasswordResponse](s, ctx, &pb.InternalRaftRequest{AuthUserChangePassword: r})
}

// UserGrantRole grants a role to a user through raft.
func (s *Server) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return authWrite[*pb.AuthUserGrantRoleResponse](s, ctx, &pb.InternalRaftRequest{AuthUserGrantRole: r})
}

// UserGet reads a user through raft (root, or the user themselves).
func (s *Server) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	return authWrite[*pb.AuthUserGetResponse](s, ctx, &pb.InternalRaftRequest{AuthUserGet: r})
}

// UserList lists the users through raft (root only).
func (s *Server) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	return authWrite[*pb.AuthUserListResponse](s, ctx, &pb.InternalRaftRequest{AuthUserList: r})
}

// UserRevokeRole revokes a role from a user through raft.
func (s *Server) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return authWrite[*pb.AuthUserRevokeRoleResponse](s, ctx, &pb.InternalRaftRequest{AuthUserRevokeRole: r})
}

// RoleAdd adds a role through raft.
func (s *Server) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return authWrite[*pb.AuthRoleAddResponse](s, ctx, &pb.InternalRaftRequest{AuthRoleAdd: r})
}

// RoleGet reads a role through raft (root, or a holder of the role).
func (s *Server) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	return authWrite[*pb.AuthRoleGetResponse](s, ctx, &pb.InternalRaftRequest{AuthRoleGet: r})
}

// RoleList lists the roles through raft (root only).
func (s *Server) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	return authWrite[*pb.AuthRoleListResponse](s, ctx, &pb.InternalRaftRequest{AuthRoleList: r})
}

// RoleDelete deletes a role through raft.
func (s *Server) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return authWrite[*pb.AuthRoleDeleteResponse](s, ctx, &pb.InternalRaftRequest{AuthRoleDelete: r})
}

// RoleGrantPermission grants a key permission to a role through raft.
func (s *Server) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return authWrite[*pb.AuthRoleGrantPermissionResponse](s, ctx, &pb.InternalRaftRequest{AuthRoleGrantPermission: r})
}

// RoleRevokePermission revokes a key permission from a role through raft.
func (s *Server) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return authWrite[*pb.AuthRoleRevokePermissionResponse](s, ctx, &pb.InternalRaftRequest{AuthRoleRevokePermission: r})
}

// cloneMsg copies a request before the server rewrites it (hashing a
// password), so the caller's message is left as it was.
func cloneMsg[T proto.Message](m T) T { return proto.Clone(m).(T) }

// checkLeaseAccess is etcd's check of a lease keep-alive (write) or of a
// TimeToLive with keys and LeaseLeases (read): with auth enabled the
// caller must name a user who is root or may write (read) every key
// attached to lease id; a keep-alive is refused with ErrAuthOldRevision if
// the permissions changed during the check. A refusal goes to the audit
// log under method (when ctx names no gRPC method).
func (s *Server) checkLeaseAccess(ctx context.Context, id int64, write bool, method string) error {
	err := s.leaseAccess(ctx, id, write)
	if err != nil && s.auth.audit != nil {
		s.auditLeaseRefusal(ctx, method, id, write, err)
	}
	return err
}

// leaseAccess is checkLeaseAccess without the audit log.
func (s *Server) leaseAccess(ctx context.Context, id int64, write bool) error {
	if !s.auth.enabled() {
		return nil
	}
	st := s.auth.st()
	rev := st.Revision()
	ai, err := s.auth.info(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		return auth.ErrUserEmpty
	}
	if st.IsAdminPermitted(*ai) == nil {
		return nil
	}
	if _, ok := s.leases.lessor.Lookup(id); ok {
		keys, err := s.leases.lessor.Keys(id)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if write {
				err = st.IsPutPermitted(*ai, k)
			} else {
				err = st.IsRangePermitted(*ai, k, nil)
			}
			if err != nil {
				return err
			}
		}
	}
	if write && rev != s.auth.st().Revision() {
		return auth.ErrAuthOldRevision
	}
	return nil
}
