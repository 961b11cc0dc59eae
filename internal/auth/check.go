package auth

import (
	"context"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/crypto/bcrypt"
)

// IsRangePermitted reports whether ai may read [key, rangeEnd) (one key when
// rangeEnd is empty, every key from key on when it is "\x00"): nil, or the
// reason it may not. While auth is disabled everything is permitted. With
// auth enabled: no user (revision 0) is ErrUserEmpty; a revision older than
// the store's is ErrAuthOldRevision; an unknown user, or a range the union of
// the user's READ and READWRITE permissions does not cover, is
// ErrPermissionDenied; role root may do anything.
func (s *Store) IsRangePermitted(ai AuthInfo, key, rangeEnd []byte) error {
	return s.isOpPermitted(ai, key, rangeEnd, authpb.READ)
}

// IsPutPermitted reports whether ai may write key, as IsRangePermitted does
// for WRITE and READWRITE permissions.
func (s *Store) IsPutPermitted(ai AuthInfo, key []byte) error {
	return s.isOpPermitted(ai, key, nil, authpb.WRITE)
}

// IsDeleteRangePermitted reports whether ai may delete [key, rangeEnd), as
// IsRangePermitted does for WRITE and READWRITE permissions.
func (s *Store) IsDeleteRangePermitted(ai AuthInfo, key, rangeEnd []byte) error {
	return s.isOpPermitted(ai, key, rangeEnd, authpb.WRITE)
}

func (s *Store) isOpPermitted(ai AuthInfo, key, rangeEnd []byte, typ authpb.Permission_Type) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.mu.enabled {
		return nil
	}
	if ai.Revision == 0 {
		return ErrUserEmpty
	}
	if ai.Revision < s.mu.revision {
		return ErrAuthOldRevision
	}
	u := s.mu.users[ai.Username]
	if u == nil {
		return ErrPermissionDenied
	}
	if hasRootRole(u) {
		return nil
	}
	if s.userPermsRLocked(u).permits(typ == authpb.READ, key, rangeEnd) {
		return nil
	}
	return ErrPermissionDenied
}

// userPermsRLocked returns u's merged permissions from the cache, building
// them on a miss. s.mu must be held (for reading at least).
func (s *Store) userPermsRLocked(u *authpb.User) *userPerms {
	name := string(u.Name)
	s.perms.RLock()
	if s.perms.rev == s.mu.revision {
		if p := s.perms.byUser[name]; p != nil {
			s.perms.RUnlock()
			return p
		}
	}
	s.perms.RUnlock()

	p := mergePerms(u, s.mu.roles)
	s.perms.Lock()
	if s.perms.rev != s.mu.revision || s.perms.byUser == nil {
		s.perms.rev = s.mu.revision
		s.perms.byUser = map[string]*userPerms{}
	}
	s.perms.byUser[name] = p
	s.perms.Unlock()
	return p
}

// IsAdminPermitted reports whether ai may manage auth, the cluster and
// maintenance: nil while auth is disabled or for a holder of role root;
// else ErrUserEmpty without a user, ErrUserNotFound for an unknown one,
// ErrPermissionDenied otherwise. Unlike the key checks it does not compare
// revisions (etcd's behaviour).
func (s *Store) IsAdminPermitted(ai AuthInfo) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.mu.enabled {
		return nil
	}
	if ai.Username == "" {
		return ErrUserEmpty
	}
	u := s.mu.users[ai.Username]
	if u == nil {
		return ErrUserNotFound
	}
	if !hasRootRole(u) {
		return ErrPermissionDenied
	}
	return nil
}

// CanGetUser is the check apply makes before UserGet: an admin may read any
// user, anybody else only themselves; otherwise IsAdminPermitted's error.
func (s *Store) CanGetUser(ai AuthInfo, name string) error {
	if err := s.IsAdminPermitted(ai); err != nil && name != ai.Username {
		return err
	}
	return nil
}

// CanGetRole is the check apply makes before RoleGet: an admin may read any
// role, anybody else only roles they hold; otherwise IsAdminPermitted's error.
func (s *Store) CanGetRole(ai AuthInfo, role string) error {
	if err := s.IsAdminPermitted(ai); err != nil && !s.HasRole(ai.Username, role) {
		return err
	}
	return nil
}

// NeedsAdmin reports whether applying r requires IsAdminPermitted first, as
// etcd's apply checks: every auth change, UserList and RoleList. UserGet and
// RoleGet have their own checks (CanGetUser, CanGetRole); AuthStatus and
// Authenticate need none; key requests use the Is...Permitted checks.
func NeedsAdmin(r *pb.InternalRaftRequest) bool {
	switch {
	case r.AuthEnable != nil, r.AuthDisable != nil,
		r.AuthUserAdd != nil, r.AuthUserDelete != nil, r.AuthUserChangePassword != nil,
		r.AuthUserGrantRole != nil, r.AuthUserRevokeRole != nil, r.AuthUserList != nil,
		r.AuthRoleAdd != nil, r.AuthRoleDelete != nil, r.AuthRoleGrantPermission != nil,
		r.AuthRoleRevokePermission != nil, r.AuthRoleList != nil:
		return true
	}
	return false
}

// CheckPassword is the API layer's check before it proposes Authenticate:
// it returns the auth revision the password was checked at, or
// ErrAuthNotEnabled, ErrAuthFailed (unknown user, wrong password) or
// ErrNoPasswordUser. The bcrypt comparison runs without the store's lock.
func (s *Store) CheckPassword(name, password string) (uint64, error) {
	s.mu.RLock()
	enabled, rev, u := s.mu.enabled, s.mu.revision, s.mu.users[name]
	s.mu.RUnlock()
	if !enabled {
		return 0, ErrAuthNotEnabled
	}
	if u == nil {
		return 0, ErrAuthFailed
	}
	if u.Options != nil && u.Options.NoPassword {
		return 0, ErrNoPasswordUser
	}
	if bcrypt.CompareHashAndPassword(u.Password, []byte(password)) != nil {
		return 0, ErrAuthFailed
	}
	return rev, nil
}

// Authenticate applies an Authenticate entry whose password CheckPassword
// accepted: it issues the user's token through the TokenProvider. index is
// the entry's raft index, which makes a simple token unique and the same on
// every member. It fails with ErrAuthNotEnabled, or ErrAuthFailed for an
// unknown or password-less user or without a TokenProvider.
func (s *Store) Authenticate(r *pb.InternalAuthenticateRequest, index uint64) (*pb.AuthenticateResponse, error) {
	s.mu.RLock()
	enabled, rev, u := s.mu.enabled, s.mu.revision, s.mu.users[r.Name]
	s.mu.RUnlock()
	if !enabled {
		return nil, ErrAuthNotEnabled
	}
	if u == nil || (u.Options != nil && u.Options.NoPassword) || s.tokens == nil {
		return nil, ErrAuthFailed
	}
	token, err := s.tokens.Assign(r.Name, rev, r.SimpleToken, index)
	if err != nil {
		return nil, err
	}
	return &pb.AuthenticateResponse{Token: token}, nil
}

// TokenInfo resolves the token a request carries (without "Bearer "): nil
// while auth is disabled (the request runs as nobody, and everything is
// permitted), else the user and revision to check the request with, or
// ErrInvalidAuthToken for an unknown, expired or forged token. ctx bounds the
// wait of a simple token for its entry to be applied here.
func (s *Store) TokenInfo(ctx context.Context, token string) (*AuthInfo, error) {
	s.mu.RLock()
	enabled, rev := s.mu.enabled, s.mu.revision
	s.mu.RUnlock()
	if !enabled {
		return nil, nil
	}
	if s.tokens == nil {
		return nil, ErrInvalidAuthToken
	}
	ai, ok := s.tokens.Info(ctx, token, rev)
	if !ok {
		return nil, ErrInvalidAuthToken
	}
	return &ai, nil
}
