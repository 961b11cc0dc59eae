// Package membership names a cluster's members and the cluster itself, and
// keeps the member list in the member's engine under storage.PrefixMembership.
//
// IDs are derived the way etcd derives them, so a cairn member started with
// etcd's flags reports the IDs etcd would: a member's ID is the first 8
// bytes (big endian) of the SHA-1 of its sorted, normalised peer URLs
// concatenated, followed by the initial cluster token; the cluster's ID is
// the first 8 bytes of the SHA-1 of its members' IDs, sorted ascending, each
// as 8 big-endian bytes. With etcd's defaults (name "default", peer URL
// http://localhost:2380, token "etcd-cluster") that gives member
// 8e9e05c52164694d in cluster cdf818194e3a8c32.
//
// # On-disk format
//
//	key                     value
//	'c' 'i'                        cluster ID (8 bytes BE)
//	'c' 'b'                        this engine's seed, JSON (Seed)         local
//	'c' 's'                        this engine's own member ID (8 bytes BE) local
//	'c' 'm' <member ID:8>          the member, JSON (Member)
//	'c' 'r' <member ID:8>          a removed member (empty value)
//	'c' 'a' <member ID:8> <type:4> a raised alarm (empty value)
//	'c' 'v'                        the cluster version, "major.minor.0"
//	'c' 'd'                        the downgrade job, JSON (Downgrade)
//
// The member list, the removed IDs, the alarms, the cluster version and
// the downgrade job change only when a
// committed entry is applied, in the same batch as the applied index it
// belongs to; they are part of the replicated state a snapshot carries. The
// keys marked local (LocalKeys) describe this engine alone and never leave
// it.
//
// # Changes
//
// A membership change travels through raft as a ConfChange whose context is
// a ChangeContext (the member, JSON). Every member checks it with Validate
// against its applied member list before applying it, so all of them
// accept or refuse the same changes.
package membership

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairn-db/cairn/internal/storage"
)

// Member is one member of the cluster.
type Member struct {
	ID         uint64   `json:"id"`
	Name       string   `json:"name,omitempty"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	IsLearner  bool     `json:"isLearner,omitempty"`
}

// NormalizeURLs parses peer URLs the way etcd does (http/https need
// host:port and no path; unix/unixs are accepted), and returns them in
// their canonical string form, sorted.
func NormalizeURLs(urls []string) ([]string, error) {
	if len(urls) == 0 {
		return nil, errors.New("membership: no peer URLs given")
	}
	out := make([]string, 0, len(urls))
	for _, in := range urls {
		in = strings.TrimSpace(in)
		u, err := url.Parse(in)
		if err != nil {
			return nil, fmt.Errorf("membership: %w", err)
		}
		switch u.Scheme {
		case "http", "https":
			if _, _, err := net.SplitHostPort(u.Host); err != nil {
				return nil, fmt.Errorf("membership: URL address does not have the form \"host:port\": %s", in)
			}
			if u.Path != "" {
				return nil, fmt.Errorf("membership: URL must not contain a path: %s", in)
			}
		case "unix", "unixs":
		default:
			return nil, fmt.Errorf("membership: URL scheme must be http, https, unix, or unixs: %s", in)
		}
		out = append(out, u.String())
	}
	sort.Strings(out)
	return out, nil
}

// MemberID derives a member's ID from its peer URLs and the initial cluster
// token, as etcd does.
func MemberID(peerURLs []string, token string) (uint64, error) {
	norm, err := NormalizeURLs(peerURLs)
	if err != nil {
		return 0, err
	}
	sum := sha1.Sum([]byte(strings.Join(norm, "") + token))
	return binary.BigEndian.Uint64(sum[:8]), nil
}

// ClusterID derives a cluster's ID from its initial members' IDs, as etcd
// does.
func ClusterID(memberIDs []uint64) uint64 {
	ids := slices.Clone(memberIDs)
	slices.Sort(ids)
	b := make([]byte, 8*len(ids))
	for i, id := range ids {
		binary.BigEndian.PutUint64(b[8*i:], id)
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// ParseInitialCluster parses etcd's --initial-cluster syntax,
// "name=url,name=url,...", into peer URLs per name (a name may repeat to
// give a member several URLs).
func ParseInitialCluster(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for part := range strings.SplitSeq(s, ",") {
		if part == "" {
			continue
		}
		name, u, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("membership: initial cluster entry %q is not name=url", part)
		}
		out[name] = append(out[name], u)
	}
	if len(out) == 0 {
		return nil, errors.New("membership: initial cluster is empty")
	}
	return out, nil
}

// InitialMembers returns the members an initial cluster names, with IDs
// derived from token, sorted by ID.
func InitialMembers(initial map[string][]string, token string) ([]Member, error) {
	var ms []Member
	seen := map[uint64]string{}
	for name, urls := range initial {
		norm, err := NormalizeURLs(urls)
		if err != nil {
			return nil, fmt.Errorf("member %q: %w", name, err)
		}
		id, err := MemberID(norm, token)
		if err != nil {
			return nil, err
		}
		if id == 0 {
			return nil, fmt.Errorf("membership: member %q hashes to ID 0", name)
		}
		if other, ok := seen[id]; ok {
			return nil, fmt.Errorf("membership: members %q and %q have identical IDs %x", other, name, id)
		}
		seen[id] = name
		ms = append(ms, Member{ID: id, Name: name, PeerURLs: norm})
	}
	slices.SortFunc(ms, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return ms, nil
}

var keyClusterID = []byte{storage.PrefixMembership, 'i'}

const subMember = 'm'

func memberKey(id uint64) []byte {
	k := make([]byte, 10)
	k[0], k[1] = storage.PrefixMembership, subMember
	binary.BigEndian.PutUint64(k[2:], id)
	return k
}

// StageClusterID records the cluster's ID in b.
func StageClusterID(b *storage.Batch, id uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], id)
	return b.Set(keyClusterID, v[:], nil)
}

// StageMember records m in b, replacing any member with its ID.
func StageMember(b *storage.Batch, m Member) error {
	v, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("membership: encode member: %w", err)
	}
	return b.Set(memberKey(m.ID), v, nil)
}

// StageRemoveMember removes the member id in b.
func StageRemoveMember(b *storage.Batch, id uint64) error {
	return b.Delete(memberKey(id), nil)
}

// LoadClusterID returns the stored cluster ID, or ok=false on a new engine.
func LoadClusterID(eng *storage.Engine) (id uint64, ok bool, err error) {
	v, err := eng.Get(keyClusterID)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("membership: read cluster ID: %w", err)
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("membership: cluster ID is %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}

// LoadMembers returns the stored members, sorted by ID.
func LoadMembers(eng *storage.Engine) ([]Member, error) {
	it, err := eng.DB().NewIter(&pebble.IterOptions{
		LowerBound: []byte{storage.PrefixMembership, subMember},
		UpperBound: []byte{storage.PrefixMembership, subMember + 1},
	})
	if err != nil {
		return nil, fmt.Errorf("membership: read members: %w", err)
	}
	defer it.Close()
	var ms []Member
	for ok := it.First(); ok; ok = it.Next() {
		var m Member
		if err := json.Unmarshal(it.Value(), &m); err != nil {
			return nil, fmt.Errorf("membership: decode member: %w", err)
		}
		ms = append(ms, m)
	}
	return ms, it.Error()
}

// Alarm is an alarm raised for a member; Type is an etcdserverpb.AlarmType.
type Alarm struct {
	MemberID uint64
	Type     int32
}

const subAlarm = 'a'

func alarmKey(a Alarm) []byte {
	k := make([]byte, 14)
	k[0], k[1] = storage.PrefixMembership, subAlarm
	binary.BigEndian.PutUint64(k[2:], a.MemberID)
	binary.BigEndian.PutUint32(k[10:], uint32(a.Type))
	return k
}

// StageAlarm records in b that alarm a is raised (active) or cleared.
func StageAlarm(b *storage.Batch, a Alarm, active bool) error {
	if active {
		return b.Set(alarmKey(a), nil, nil)
	}
	return b.Delete(alarmKey(a), nil)
}

// LoadAlarms returns the raised alarms, ordered by member and type.
func LoadAlarms(eng *storage.Engine) ([]Alarm, error) {
	it, err := eng.DB().NewIter(&pebble.IterOptions{
		LowerBound: []byte{storage.PrefixMembership, subAlarm},
		UpperBound: []byte{storage.PrefixMembership, subAlarm + 1},
	})
	if err != nil {
		return nil, fmt.Errorf("membership: read alarms: %w", err)
	}
	defer it.Close()
	var out []Alarm
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 14 {
			return nil, fmt.Errorf("membership: alarm key is %d bytes, want 14", len(k))
		}
		out = append(out, Alarm{MemberID: binary.BigEndian.Uint64(k[2:]), Type: int32(binary.BigEndian.Uint32(k[10:]))})
	}
	return out, it.Error()
}

var keyLocalID = []byte{storage.PrefixMembership, 's'}

// StageLocalID records which member this engine belongs to.
func StageLocalID(b *storage.Batch, id uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], id)
	return b.Set(keyLocalID, v[:], nil)
}

// LoadLocalID returns the member this engine belongs to, ok=false if none
// was recorded.
func LoadLocalID(eng *storage.Engine) (id uint64, ok bool, err error) {
	v, err := eng.Get(keyLocalID)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("membership: read local member ID: %w", err)
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("membership: local member ID is %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}
