package auth

import (
	"bytes"
	"slices"
	"sort"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// RoleAdd adds a role without permissions. It refuses an empty name
// (ErrRoleEmpty) and a taken one (ErrRoleAlreadyExist).
func (s *Store) RoleAdd(w Writer, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	if r.Name == "" {
		return nil, ErrRoleEmpty
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.roles[r.Name] != nil {
		return nil, ErrRoleAlreadyExist
	}
	ro := &authpb.Role{Name: []byte(r.Name)}
	if err := s.commitLocked(w, edit{putRoles: []*authpb.Role{ro}, bumpRev: true}); err != nil {
		return nil, err
	}
	return &pb.AuthRoleAddResponse{}, nil
}

// RoleDelete deletes a role and takes it from every user holding it. While
// auth is enabled, role root cannot be deleted (ErrInvalidAuthMgmt); an
// unknown role is ErrRoleNotFound.
func (s *Store) RoleDelete(w Writer, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.enabled && r.Role == rootRole {
		return nil, ErrInvalidAuthMgmt
	}
	if s.mu.roles[r.Role] == nil {
		return nil, ErrRoleNotFound
	}
	e := edit{delRoles: []string{r.Role}, bumpRev: true}
	for _, name := range sortedKeys(s.mu.users) {
		old := s.mu.users[name]
		if !slices.Contains(old.Roles, r.Role) {
			continue
		}
		u := &authpb.User{Name: old.Name, Password: old.Password, Options: old.Options}
		for _, role := range old.Roles {
			if role != r.Role {
				u.Roles = append(u.Roles, role)
			}
		}
		e.putUsers = append(e.putUsers, u)
	}
	if err := s.commitLocked(w, e); err != nil {
		return nil, err
	}
	return &pb.AuthRoleDeleteResponse{}, nil
}

// byKey orders permissions by key alone. RoleGrantPermission sorts with it
// through sort.Sort, as etcd does, so that permissions sharing a key keep
// etcd's order and RoleGet lists them as etcd would.
type byKey []*authpb.Permission

func (p byKey) Len() int           { return len(p) }
func (p byKey) Less(i, j int) bool { return bytes.Compare(p[i].Key, p[j].Key) < 0 }
func (p byKey) Swap(i, j int)      { p[i], p[j] = p[j], p[i] }

// RoleGrantPermission grants a permission on [key, range_end) to a role, or
// changes the type of one the role has on the same key and range end. A
// missing permission is ErrPermissionNotGiven, an invalid range (empty key,
// range end neither empty, "\x00" nor above the key) ErrInvalidAuthMgmt,
// an unknown role ErrRoleNotFound.
//
// As etcd does, only the first permission on the same key is compared for
// the range end: with several permissions on one key, a grant may add a
// duplicate, which RoleRevokePermission then removes together.
func (s *Store) RoleGrantPermission(w Writer, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	if r.Perm == nil {
		return nil, ErrPermissionNotGiven
	}
	if !isValidPermissionRange(r.Perm.Key, r.Perm.RangeEnd) {
		return nil, ErrInvalidAuthMgmt
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.mu.roles[r.Name]
	if old == nil {
		return nil, ErrRoleNotFound
	}
	perms := make([]*authpb.Permission, len(old.KeyPermission), len(old.KeyPermission)+1)
	copy(perms, old.KeyPermission)
	i := sort.Search(len(perms), func(i int) bool { return bytes.Compare(perms[i].Key, r.Perm.Key) >= 0 })
	if i < len(perms) && bytes.Equal(perms[i].Key, r.Perm.Key) && bytes.Equal(perms[i].RangeEnd, r.Perm.RangeEnd) {
		p := clonePerm(perms[i])
		p.PermType = r.Perm.PermType
		perms[i] = p
	} else {
		perms = append(perms, &authpb.Permission{
			Key:      bytes.Clone(r.Perm.Key),
			RangeEnd: bytes.Clone(r.Perm.RangeEnd),
			PermType: r.Perm.PermType,
		})
		sort.Sort(byKey(perms))
	}
	ro := &authpb.Role{Name: old.Name, KeyPermission: perms}
	if err := s.commitLocked(w, edit{putRoles: []*authpb.Role{ro}, bumpRev: true}); err != nil {
		return nil, err
	}
	return &pb.AuthRoleGrantPermissionResponse{}, nil
}

// RoleRevokePermission removes every permission of a role on exactly key and
// range end. An unknown role is ErrRoleNotFound; no such permission,
// ErrPermissionNotGranted.
func (s *Store) RoleRevokePermission(w Writer, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.mu.roles[r.Role]
	if old == nil {
		return nil, ErrRoleNotFound
	}
	ro := &authpb.Role{Name: old.Name}
	for _, p := range old.KeyPermission {
		if !bytes.Equal(p.Key, r.Key) || !bytes.Equal(p.RangeEnd, r.RangeEnd) {
			ro.KeyPermission = append(ro.KeyPermission, p)
		}
	}
	if len(ro.KeyPermission) == len(old.KeyPermission) {
		return nil, ErrPermissionNotGranted
	}
	if err := s.commitLocked(w, edit{putRoles: []*authpb.Role{ro}, bumpRev: true}); err != nil {
		return nil, err
	}
	return &pb.AuthRoleRevokePermissionResponse{}, nil
}

// RoleGet returns a role's permissions in their stored order; role root
// shows read and write on every key. An unknown role is ErrRoleNotFound. Who
// may ask is the caller's check (CanGetRole).
func (s *Store) RoleGet(r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ro := s.mu.roles[r.Role]
	if ro == nil {
		return nil, ErrRoleNotFound
	}
	if r.Role == rootRole {
		return &pb.AuthRoleGetResponse{Perm: []*authpb.Permission{rootPerm()}}, nil
	}
	resp := &pb.AuthRoleGetResponse{Perm: make([]*authpb.Permission, 0, len(ro.KeyPermission))}
	for _, p := range ro.KeyPermission {
		resp.Perm = append(resp.Perm, clonePerm(p))
	}
	return resp, nil
}

// RoleList returns every role's name, sorted.
func (s *Store) RoleList(_ *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &pb.AuthRoleListResponse{Roles: sortedKeys(s.mu.roles)}, nil
}

func clonePerm(p *authpb.Permission) *authpb.Permission {
	return &authpb.Permission{PermType: p.PermType, Key: bytes.Clone(p.Key), RangeEnd: bytes.Clone(p.RangeEnd)}
}
