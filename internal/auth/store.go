package auth

import (
	"maps"
	"slices"
	"sync"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

const (
	rootUser = "root"
	rootRole = "root"
)

// rootPerm returns what RoleGet shows for role root, whatever was granted to
// it: read and write on every key.
func rootPerm() *authpb.Permission {
	return &authpb.Permission{PermType: authpb.READWRITE, Key: []byte{}, RangeEnd: []byte{0}}
}

// AuthInfo names who a request runs as: the user and the auth revision their
// token (or the API layer's check) saw. The zero AuthInfo is "no user".
type AuthInfo struct {
	Username string
	Revision uint64
}

// Options configures a Store.
type Options struct {
	// Tokens, if set, is told when auth is enabled or disabled and when a
	// user's tokens must go (user deleted, password changed), and issues the
	// token of Authenticate. Nil means Authenticate fails with ErrAuthFailed,
	// as etcd's does without --auth-token.
	Tokens TokenProvider
}

// Store is the auth state machine: users, roles, their permissions, the
// enabled flag and the auth revision. The apply methods (those taking a
// Writer) must be called by one goroutine at a time, in log order; the
// queries and permission checks may be called concurrently with them and
// with each other.
type Store struct {
	tokens TokenProvider

	mu struct {
		sync.RWMutex
		enabled bool
		// revision counts the changes to users and roles (and AuthDisable);
		// it starts at 1 and never decreases. A request checked at an older
		// revision is refused with ErrAuthOldRevision.
		revision uint64
		// users and roles are keyed by name; their values are never modified
		// in place (an apply replaces them), so a reader holding one may use
		// it after unlocking. Every user's Roles is sorted and duplicate-free.
		users map[string]*authpb.User
		roles map[string]*authpb.Role
	}

	// perms caches each user's merged permissions. Lock order: mu, then
	// perms. The cache belongs to revision perms.rev; an apply that changes
	// users or roles bumps the revision, which empties it.
	perms struct {
		sync.RWMutex
		rev    uint64
		byUser map[string]*userPerms
	}
}

// New returns an empty Store: auth disabled, revision 1 (etcd's first
// revision), no users, no roles.
func New(opts Options) *Store {
	s := &Store{tokens: opts.Tokens}
	s.mu.revision = 1
	s.mu.users = map[string]*authpb.User{}
	s.mu.roles = map[string]*authpb.Role{}
	return s
}

// Revision returns the current auth revision.
func (s *Store) Revision() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mu.revision
}

// IsEnabled reports whether auth is enabled.
func (s *Store) IsEnabled() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mu.enabled
}

// edit collects one apply's writes, so that they reach the Writer before
// the in-memory state changes: if the Writer fails, the state is as before
// (and the caller, who cannot commit the batch, stops the member).
type edit struct {
	putUsers []*authpb.User
	delUsers []string
	putRoles []*authpb.Role
	delRoles []string
	enabled  *bool
	bumpRev  bool
}

// commitLocked writes e through w and then applies it to memory. s.mu must
// be held for writing.
func (s *Store) commitLocked(w Writer, e edit) error {
	rev := s.mu.revision
	if e.bumpRev {
		rev++
	}
	if e.enabled != nil {
		if err := w.Put(keyEnabled, encodeEnabled(*e.enabled)); err != nil {
			return err
		}
	}
	for _, r := range e.putRoles {
		if err := w.Put(roleKey(string(r.Name)), encodeRole(r)); err != nil {
			return err
		}
	}
	for _, name := range e.delRoles {
		if err := w.Delete(roleKey(name)); err != nil {
			return err
		}
	}
	for _, u := range e.putUsers {
		if err := w.Put(userKey(string(u.Name)), encodeUser(u)); err != nil {
			return err
		}
	}
	for _, name := range e.delUsers {
		if err := w.Delete(userKey(name)); err != nil {
			return err
		}
	}
	if e.bumpRev {
		if err := w.Put(keyRevision, encodeRevision(rev)); err != nil {
			return err
		}
	}

	if e.enabled != nil {
		s.mu.enabled = *e.enabled
	}
	for _, r := range e.putRoles {
		s.mu.roles[string(r.Name)] = r
	}
	for _, name := range e.delRoles {
		delete(s.mu.roles, name)
	}
	for _, u := range e.putUsers {
		s.mu.users[string(u.Name)] = u
	}
	for _, name := range e.delUsers {
		delete(s.mu.users, name)
	}
	s.mu.revision = rev
	return nil
}

// AuthEnable turns auth on. It refuses with ErrRootUserNotExist without a
// user "root" and with ErrRootRoleNotExist while that user lacks role
// "root". Enabling an enabled store does nothing; enabling does not change
// the revision (etcd's behaviour).
func (s *Store) AuthEnable(w Writer, _ *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.enabled {
		return &pb.AuthEnableResponse{}, nil
	}
	u := s.mu.users[rootUser]
	if u == nil {
		return nil, ErrRootUserNotExist
	}
	if !hasRootRole(u) {
		return nil, ErrRootRoleNotExist
	}
	on := true
	if err := s.commitLocked(w, edit{enabled: &on}); err != nil {
		return nil, err
	}
	if s.tokens != nil {
		s.tokens.Enable()
	}
	return &pb.AuthEnableResponse{}, nil
}

// AuthDisable turns auth off and bumps the revision; every token is
// forgotten. Disabling a disabled store does nothing.
func (s *Store) AuthDisable(w Writer, _ *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mu.enabled {
		return &pb.AuthDisableResponse{}, nil
	}
	off := false
	if err := s.commitLocked(w, edit{enabled: &off, bumpRev: true}); err != nil {
		return nil, err
	}
	if s.tokens != nil {
		s.tokens.Disable()
	}
	return &pb.AuthDisableResponse{}, nil
}

// AuthStatus returns whether auth is enabled and the auth revision.
func (s *Store) AuthStatus(_ *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &pb.AuthStatusResponse{Enabled: s.mu.enabled, AuthRevision: s.mu.revision}, nil
}

// hasRootRole reports whether u holds role root.
func hasRootRole(u *authpb.User) bool {
	_, ok := slices.BinarySearch(u.Roles, rootRole)
	return ok
}

// HasRole reports whether user exists and holds role. It is what lets a
// non-root user read a role of their own (RoleGet at apply).
func (s *Store) HasRole(user, role string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u := s.mu.users[user]
	return u != nil && slices.Contains(u.Roles, role)
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
