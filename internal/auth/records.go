package auth

import (
	"bytes"
	"fmt"

	"go.etcd.io/etcd/api/v3/authpb"
	"google.golang.org/protobuf/proto"
)

// State is the whole persisted auth state as plain values: what a backup
// file carries across to etcd's format and back. Users keep their bcrypt
// hashes as they are, so a password set on one side authenticates on the
// other.
type State struct {
	// Enabled is the auth enabled flag.
	Enabled bool
	// Revision is the auth revision.
	Revision uint64
	// Users and Roles are sorted by name.
	Users []*authpb.User
	Roles []*authpb.Role
}

// ReadState reads the state Save or the apply methods wrote through r, as
// Load does (an empty keyspace is auth disabled at revision 1). A key or
// value it cannot decode is ErrCorrupt.
func ReadState(r Reader) (State, error) {
	s, err := Load(r, Options{})
	if err != nil {
		return State{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := State{Enabled: s.mu.enabled, Revision: s.mu.revision}
	for _, name := range sortedKeys(s.mu.users) {
		st.Users = append(st.Users, proto.Clone(s.mu.users[name]).(*authpb.User))
	}
	for _, name := range sortedKeys(s.mu.roles) {
		st.Roles = append(st.Roles, proto.Clone(s.mu.roles[name]).(*authpb.Role))
	}
	return st, nil
}

// Put writes st through w in the on-disk form Load reads, for a fresh
// keyspace (a restore). A revision of 0 (etcd's, before any change) is
// written as 1, where cairn's revisions start. A user or role without a
// name, or two of the same name, is ErrCorrupt.
func (st State) Put(w Writer) error {
	if err := w.Put(keyEnabled, encodeEnabled(st.Enabled)); err != nil {
		return err
	}
	if err := w.Put(keyRevision, encodeRevision(max(st.Revision, 1))); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, r := range st.Roles {
		if len(r.Name) == 0 || seen["r"+string(r.Name)] {
			return fmt.Errorf("%w: role %q empty or repeated", ErrCorrupt, r.Name)
		}
		seen["r"+string(r.Name)] = true
		if err := w.Put(roleKey(string(r.Name)), encodeRole(r)); err != nil {
			return err
		}
	}
	for _, u := range st.Users {
		if len(u.Name) == 0 || seen["u"+string(u.Name)] {
			return fmt.Errorf("%w: user %q empty or repeated", ErrCorrupt, u.Name)
		}
		seen["u"+string(u.Name)] = true
		if err := w.Put(userKey(string(u.Name)), encodeUser(u)); err != nil {
			return err
		}
	}
	return nil
}

// KeyRange is the range [lo, hi) of the storage keys the auth state
// occupies.
func KeyRange() (lo, hi []byte) { return bytes.Clone(prefixAll), []byte{KeyPrefix, '/' + 1} }
