package membership

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairn-db/cairn/internal/storage"
)

// Errors of membership changes, with etcd's text; the api maps them to the
// statuses etcd sends (member not found, member exists, peer URL exists,
// not a learner, too many learners).
var (
	// ErrIDRemoved: the member was removed; its ID cannot come back.
	ErrIDRemoved = errors.New("membership: ID removed")
	// ErrIDExists: a member with that ID is already in the cluster.
	ErrIDExists = errors.New("membership: ID exists")
	// ErrIDNotFound: no member has that ID.
	ErrIDNotFound = errors.New("membership: ID not found")
	// ErrPeerURLExists: another member already has one of the peer URLs.
	ErrPeerURLExists = errors.New("membership: peerURL exists")
	// ErrMemberNotLearner: only a learner can be promoted.
	ErrMemberNotLearner = errors.New("membership: can only promote a learner member")
	// ErrTooManyLearners: adding the learner would exceed the cluster's
	// maximum number of learners.
	ErrTooManyLearners = errors.New("membership: too many learner members in cluster")
	// ErrLastVoter: the change would leave the cluster without a voter,
	// which raft cannot survive; etcd's health checks refuse it earlier.
	ErrLastVoter = errors.New("membership: cannot remove the last voting member")
)

// ChangeContext travels in a raft conf change's context: the member it
// adds, updates or promotes. Its JSON is a Member's with one more field, so
// the context of a bootstrap conf change (a bare Member) decodes as one.
type ChangeContext struct {
	Member
	// IsPromote marks a ConfChangeAddNode that promotes a learner.
	IsPromote bool `json:"isPromote,omitempty"`
}

// Kind is what a membership change does.
type Kind int

// The kinds of membership change.
const (
	KindAdd Kind = iota // a voter, or a learner when the member IsLearner
	KindRemove
	KindUpdate // new peer URLs
	KindPromote
)

// Change is a membership change about to be applied.
type Change struct {
	Kind Kind
	// Member is the member added, updated (its ID and new peer URLs), or,
	// for a removal or promotion, just its ID.
	Member Member
}

// Validate reports whether ch may be applied to a cluster of members
// (sorted or not) after the removed IDs left it, allowing at most
// maxLearners learners; etcd applies the same checks, in the same order.
// Every member applies a change only if Validate accepts it, so the member
// lists stay identical.
func Validate(members []Member, removed map[uint64]bool, ch Change, maxLearners int) error {
	id := ch.Member.ID
	if removed[id] {
		return ErrIDRemoved
	}
	var cur *Member
	for i := range members {
		if members[i].ID == id {
			cur = &members[i]
		}
	}
	urlOwner := func(u string) (uint64, bool) {
		for _, m := range members {
			for _, mu := range m.PeerURLs {
				if mu == u {
					return m.ID, true
				}
			}
		}
		return 0, false
	}
	switch ch.Kind {
	case KindAdd:
		if cur != nil {
			return ErrIDExists
		}
		for _, u := range ch.Member.PeerURLs {
			if _, ok := urlOwner(u); ok {
				return ErrPeerURLExists
			}
		}
		if ch.Member.IsLearner {
			learners := 0
			for _, m := range members {
				if m.IsLearner {
					learners++
				}
			}
			if learners+1 > maxLearners {
				return ErrTooManyLearners
			}
		}
	case KindPromote:
		if cur == nil {
			return ErrIDNotFound
		}
		if !cur.IsLearner {
			return ErrMemberNotLearner
		}
	case KindRemove:
		if cur == nil {
			return ErrIDNotFound
		}
		if !cur.IsLearner {
			voters := 0
			for _, m := range members {
				if !m.IsLearner {
					voters++
				}
			}
			if voters == 1 {
				return ErrLastVoter
			}
		}
	case KindUpdate:
		if cur == nil {
			return ErrIDNotFound
		}
		for _, u := range ch.Member.PeerURLs {
			if owner, ok := urlOwner(u); ok && owner != id {
				return ErrPeerURLExists
			}
		}
	default:
		return fmt.Errorf("membership: unknown change kind %d", ch.Kind)
	}
	return nil
}

// NewMemberID derives the ID of a member added at runtime, as etcd does
// for MemberAdd: from its peer URLs and the time, so a member re-added
// later with the same URLs gets a new ID (the old one stays removed).
func NewMemberID(peerURLs []string, now time.Time) (uint64, error) {
	norm, err := NormalizeURLs(peerURLs)
	if err != nil {
		return 0, err
	}
	sum := sha1.Sum([]byte(strings.Join(norm, "") + strconv.FormatInt(now.Unix(), 10)))
	return binary.BigEndian.Uint64(sum[:8]), nil
}

// IsStarted reports whether the member has published its attributes (its
// name), which is how etcd tells a member that runs from one only added.
func (m Member) IsStarted() bool { return m.Name != "" }

const subRemoved = 'r'

func removedKey(id uint64) []byte {
	k := make([]byte, 10)
	k[0], k[1] = storage.PrefixMembership, subRemoved
	binary.BigEndian.PutUint64(k[2:], id)
	return k
}

// StageRemoved records in b that member id was removed for good.
func StageRemoved(b *storage.Batch, id uint64) error {
	return b.Set(removedKey(id), nil, nil)
}

// LoadRemoved returns the IDs of the removed members.
func LoadRemoved(eng *storage.Engine) (map[uint64]bool, error) {
	it, err := eng.DB().NewIter(&pebble.IterOptions{
		LowerBound: []byte{storage.PrefixMembership, subRemoved},
		UpperBound: []byte{storage.PrefixMembership, subRemoved + 1},
	})
	if err != nil {
		return nil, fmt.Errorf("membership: read removed members: %w", err)
	}
	defer it.Close()
	out := map[uint64]bool{}
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Key()) != 10 {
			return nil, fmt.Errorf("membership: removed key is %d bytes, want 10", len(it.Key()))
		}
		out[binary.BigEndian.Uint64(it.Key()[2:])] = true
	}
	return out, it.Error()
}

// LocalKeys returns the membership keys that belong to this engine alone
// (the member's own ID and its seed), sorted: a snapshot of another
// member's state must neither carry nor overwrite them.
func LocalKeys() [][]byte { return [][]byte{keySeed, keyLocalID} }

// Seed is what a member records, for itself alone, about the cluster it
// started in: the founding members (whose bootstrap conf changes start a
// new log) or, for a member that joined a running cluster, the members it
// was told about. Until the member has applied its own addition, these are
// the peers it talks to.
type Seed struct {
	Join    bool     `json:"join,omitempty"`
	Members []Member `json:"members"`
}

var keySeed = []byte{storage.PrefixMembership, 'b'}

// StageSeed records the member's seed in b.
func StageSeed(b *storage.Batch, s Seed) error {
	v, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("membership: encode seed: %w", err)
	}
	return b.Set(keySeed, v, nil)
}

// LoadSeed returns the recorded seed, ok=false if there is none (a data
// directory from before seeds were recorded).
func LoadSeed(eng *storage.Engine) (s Seed, ok bool, err error) {
	v, err := eng.Get(keySeed)
	if errors.Is(err, storage.ErrNotFound) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("membership: read seed: %w", err)
	}
	if err := json.Unmarshal(v, &s); err != nil {
		return s, false, fmt.Errorf("membership: decode seed: %w", err)
	}
	return s, true, nil
}

// ClusterInfo is what a member answers a joining member that asks for the
// cluster (the peer endpoint /members).
type ClusterInfo struct {
	ClusterID uint64   `json:"clusterID,string"`
	Members   []Member `json:"members"`
}

// DecodeClusterInfo parses a /members answer.
func DecodeClusterInfo(data []byte) (ClusterInfo, error) {
	var ci ClusterInfo
	if err := json.Unmarshal(data, &ci); err != nil {
		return ci, fmt.Errorf("membership: decode cluster info: %w", err)
	}
	return ci, nil
}
