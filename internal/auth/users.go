package auth

import (
	"encoding/base64"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// storedPassword returns the bcrypt hash apply stores for a request's
// password fields. The API layer has already hashed the password
// (HashUserAdd, HashChangePassword): apply only decodes, so every member
// stores the same bytes. An empty HashedPassword stores an empty hash, which
// no password matches (etcd's behaviour for a change to "").
func storedPassword(password, hashed string) ([]byte, error) {
	if password != "" && hashed == "" {
		return nil, ErrPlainPassword
	}
	b, err := base64.StdEncoding.DecodeString(hashed)
	if err != nil {
		return nil, ErrNoPasswordUser
	}
	return b, nil
}

// UserAdd adds a user. It refuses an empty name (ErrUserEmpty) and a taken
// one (ErrUserAlreadyExist). Unless r.Options.NoPassword, r.HashedPassword
// must hold the base64 bcrypt hash HashUserAdd made.
func (s *Store) UserAdd(w Writer, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if r.Name == "" {
		return nil, ErrUserEmpty
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.users[r.Name] != nil {
		return nil, ErrUserAlreadyExist
	}
	opts := r.Options
	if opts == nil {
		opts = &authpb.UserAddOptions{}
	}
	u := &authpb.User{Name: []byte(r.Name), Options: &authpb.UserAddOptions{NoPassword: opts.NoPassword}}
	if !opts.NoPassword {
		pw, err := storedPassword(r.Password, r.HashedPassword)
		if err != nil {
			return nil, err
		}
		u.Password = pw
	}
	if err := s.commitLocked(w, edit{putUsers: []*authpb.User{u}, bumpRev: true}); err != nil {
		return nil, err
	}
	return &pb.AuthUserAddResponse{}, nil
}

// UserDelete deletes a user and their tokens. While auth is enabled, root
// cannot be deleted (ErrInvalidAuthMgmt); an unknown name is ErrUserNotFound.
func (s *Store) UserDelete(w Writer, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.enabled && r.Name == rootUser {
		return nil, ErrInvalidAuthMgmt
	}
	if s.mu.users[r.Name] == nil {
		return nil, ErrUserNotFound
	}
	if err := s.commitLocked(w, edit{delUsers: []string{r.Name}, bumpRev: true}); err != nil {
		return nil, err
	}
	if s.tokens != nil {
		s.tokens.InvalidateUser(r.Name)
	}
	return &pb.AuthUserDeleteResponse{}, nil
}

// UserChangePassword replaces a user's password hash (HashChangePassword
// made it) and drops their tokens. A user created with NoPassword keeps
// having none. An unknown name is ErrUserNotFound.
func (s *Store) UserChangePassword(w Writer, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.mu.users[r.Name]
	if old == nil {
		return nil, ErrUserNotFound
	}
	u := &authpb.User{Name: old.Name, Roles: old.Roles, Options: old.Options}
	if old.Options == nil || !old.Options.NoPassword {
		pw, err := storedPassword(r.Password, r.HashedPassword)
		if err != nil {
			return nil, err
		}
		u.Password = pw
	}
	if err := s.commitLocked(w, edit{putUsers: []*authpb.User{u}, bumpRev: true}); err != nil {
		return nil, err
	}
	if s.tokens != nil {
		s.tokens.InvalidateUser(r.Name)
	}
	return &pb.AuthUserChangePasswordResponse{}, nil
}

// UserGrantRole grants a role to a user. The user must exist
// (ErrUserNotFound) and so must the role (ErrRoleNotFound), except role
// root, which may be granted before it is created. Granting a role the user
// holds succeeds and changes nothing, not even the revision.
func (s *Store) UserGrantRole(w Writer, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.mu.users[r.User]
	if old == nil {
		return nil, ErrUserNotFound
	}
	if r.Role != rootRole && s.mu.roles[r.Role] == nil {
		return nil, ErrRoleNotFound
	}
	i, found := slices.BinarySearch(old.Roles, r.Role)
	if found {
		return &pb.AuthUserGrantRoleResponse{}, nil
	}
	u := &authpb.User{Name: old.Name, Password: old.Password, Options: old.Options,
		Roles: slices.Insert(slices.Clip(old.Roles), i, r.Role)}
	if err := s.commitLocked(w, edit{putUsers: []*authpb.User{u}, bumpRev: true}); err != nil {
		return nil, err
	}
	return &pb.AuthUserGrantRoleResponse{}, nil
}

// UserRevokeRole takes a role from a user. While auth is enabled, root keeps
// role root (ErrInvalidAuthMgmt). An unknown user is ErrUserNotFound; a role
// the user lacks is ErrRoleNotGranted.
func (s *Store) UserRevokeRole(w Writer, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.enabled && r.Name == rootUser && r.Role == rootRole {
		return nil, ErrInvalidAuthMgmt
	}
	old := s.mu.users[r.Name]
	if old == nil {
		return nil, ErrUserNotFound
	}
	u := &authpb.User{Name: old.Name, Password: old.Password, Options: old.Options}
	for _, role := range old.Roles {
		if role != r.Role {
			u.Roles = append(u.Roles, role)
		}
	}
	if len(u.Roles) == len(old.Roles) {
		return nil, ErrRoleNotGranted
	}
	if err := s.commitLocked(w, edit{putUsers: []*authpb.User{u}, bumpRev: true}); err != nil {
		return nil, err
	}
	return &pb.AuthUserRevokeRoleResponse{}, nil
}

// UserGet returns a user's roles, sorted; an unknown name is ErrUserNotFound.
// Who may ask is the caller's check (CanGetUser).
func (s *Store) UserGet(r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u := s.mu.users[r.Name]
	if u == nil {
		return nil, ErrUserNotFound
	}
	return &pb.AuthUserGetResponse{Roles: slices.Clone(u.Roles)}, nil
}

// UserList returns every user's name, sorted.
func (s *Store) UserList(_ *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &pb.AuthUserListResponse{Users: sortedKeys(s.mu.users)}, nil
}
