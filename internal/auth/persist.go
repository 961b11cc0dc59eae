package auth

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"go.etcd.io/etcd/api/v3/authpb"
	"google.golang.org/protobuf/proto"
)

// Writer takes the auth state's key/value writes. The server passes the
// storage batch that also carries the entry's applied index, so the state
// and the index land together. A Writer need not be safe for concurrent use.
type Writer interface {
	// Put sets key to value.
	Put(key, value []byte) error
	// Delete removes key; removing an absent key is not an error.
	Delete(key []byte) error
}

// Reader gives Load the persisted auth state.
type Reader interface {
	// Scan calls fn for every key that starts with prefix, in key order, and
	// stops at fn's first error, returning it. fn may not retain key or value.
	Scan(prefix []byte, fn func(key, value []byte) error) error
}

// KeyPrefix is the first byte of every key the auth state writes: the 'a'
// keyspace internal/storage hands to auth.
const KeyPrefix = 'a'

// The persisted keys (see the package doc for the whole form).
var (
	prefixAll   = []byte{KeyPrefix, '/'}
	keyEnabled  = []byte("a/enabled")
	keyRevision = []byte("a/revision")
	prefixUser  = []byte("a/user/")
	prefixRole  = []byte("a/role/")
)

func userKey(name string) []byte { return append(bytes.Clone(prefixUser), name...) }
func roleKey(name string) []byte { return append(bytes.Clone(prefixRole), name...) }

func encodeEnabled(on bool) []byte {
	if on {
		return []byte{1}
	}
	return []byte{0}
}

func encodeRevision(rev uint64) []byte { return binary.BigEndian.AppendUint64(nil, rev) }

// deterministic marshals the same message to the same bytes on every member.
var deterministic = proto.MarshalOptions{Deterministic: true}

func encodeUser(u *authpb.User) []byte {
	b, err := deterministic.Marshal(u)
	if err != nil {
		panic(fmt.Sprintf("auth: marshal user %q: %v", u.Name, err)) // only an invalid message fails
	}
	return b
}

func encodeRole(r *authpb.Role) []byte {
	b, err := deterministic.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("auth: marshal role %q: %v", r.Name, err))
	}
	return b
}

// Save writes the whole state through w: the enabled flag, the revision,
// every user and every role, in key order. It is for a fresh keyspace (a
// snapshot, a restore); apply writes only what each operation changes.
func (s *Store) Save(w Writer) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := w.Put(keyEnabled, encodeEnabled(s.mu.enabled)); err != nil {
		return err
	}
	if err := w.Put(keyRevision, encodeRevision(s.mu.revision)); err != nil {
		return err
	}
	for _, name := range sortedKeys(s.mu.roles) {
		if err := w.Put(roleKey(name), encodeRole(s.mu.roles[name])); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(s.mu.users) {
		if err := w.Put(userKey(name), encodeUser(s.mu.users[name])); err != nil {
			return err
		}
	}
	return nil
}

// Load reads the state Save or the apply methods wrote. An empty keyspace
// gives the state of New: auth disabled, revision 1, no users or roles. A
// key or value it cannot decode is ErrCorrupt.
func Load(r Reader, opts Options) (*Store, error) {
	s := New(opts)
	err := r.Scan(prefixAll, func(key, value []byte) error {
		switch {
		case bytes.Equal(key, keyEnabled):
			if len(value) != 1 || value[0] > 1 {
				return fmt.Errorf("%w: enabled flag %x", ErrCorrupt, value)
			}
			s.mu.enabled = value[0] == 1
		case bytes.Equal(key, keyRevision):
			if len(value) != 8 {
				return fmt.Errorf("%w: revision %x", ErrCorrupt, value)
			}
			s.mu.revision = binary.BigEndian.Uint64(value)
		case bytes.HasPrefix(key, prefixUser):
			u := &authpb.User{}
			if err := proto.Unmarshal(value, u); err != nil {
				return fmt.Errorf("%w: user %q: %v", ErrCorrupt, key[len(prefixUser):], err)
			}
			if name := string(key[len(prefixUser):]); string(u.Name) != name {
				return fmt.Errorf("%w: user key %q holds user %q", ErrCorrupt, name, u.Name)
			}
			s.mu.users[string(u.Name)] = u
		case bytes.HasPrefix(key, prefixRole):
			ro := &authpb.Role{}
			if err := proto.Unmarshal(value, ro); err != nil {
				return fmt.Errorf("%w: role %q: %v", ErrCorrupt, key[len(prefixRole):], err)
			}
			if name := string(key[len(prefixRole):]); string(ro.Name) != name {
				return fmt.Errorf("%w: role key %q holds role %q", ErrCorrupt, name, ro.Name)
			}
			s.mu.roles[string(ro.Name)] = ro
		default:
			return fmt.Errorf("%w: unknown key %q", ErrCorrupt, key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.mu.enabled && s.tokens != nil {
		s.tokens.Enable()
	}
	return s, nil
}
