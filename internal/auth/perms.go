package auth

import (
	"bytes"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/pkg/v3/adt"
)

// A span is the half-open key interval [begin, end). An empty end is
// +infinity (the from-key form); begin is never empty in a span built from a
// valid permission.
type span struct {
	begin, end []byte
}

// cmpBound compares two interval bounds in which the empty slice stands for
// +infinity, the order etcd's permission intervals use. An empty key is thus
// above every key, so a request for the empty key is covered by nothing.
func cmpBound(a, b []byte) int {
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return 1
	case len(b) == 0:
		return -1
	}
	return bytes.Compare(a, b)
}

// permSpan returns the interval a permission covers: one key ([key, key+"\x00")),
// [key, range_end), or from key on when range_end is "\x00".
func permSpan(p *authpb.Permission) span {
	switch {
	case len(p.RangeEnd) == 0:
		end := make([]byte, len(p.Key)+1)
		copy(end, p.Key)
		return span{begin: p.Key, end: end}
	case isOpenEnded(p.RangeEnd):
		return span{begin: p.Key}
	default:
		return span{begin: p.Key, end: p.RangeEnd}
	}
}

// isOpenEnded reports whether rangeEnd is "\x00", which means "every key from
// key on" in a permission and in a request alike.
func isOpenEnded(rangeEnd []byte) bool { return len(rangeEnd) == 1 && rangeEnd[0] == 0 }

// isValidPermissionRange reports whether a permission may be granted: a
// non-empty key, and a range end that is empty (one key), "\x00" (from key)
// or above the key.
func isValidPermissionRange(key, rangeEnd []byte) bool {
	if len(key) == 0 {
		return false
	}
	return len(rangeEnd) == 0 || isOpenEnded(rangeEnd) || bytes.Compare(key, rangeEnd) < 0
}

// spanSet is a union of intervals kept as sorted, disjoint, non-adjacent
// spans, so a coverage question is one binary search.
type spanSet []span

// newSpanSet merges spans (in any order) into a spanSet. Touching spans
// ([a, b) and [b, c)) merge: a range across their seam is covered.
func newSpanSet(in []span) spanSet {
	if len(in) == 0 {
		return nil
	}
	slices.SortFunc(in, func(x, y span) int { return cmpBound(x.begin, y.begin) })
	out := spanSet{in[0]}
	for _, s := range in[1:] {
		last := &out[len(out)-1]
		if cmpBound(s.begin, last.end) <= 0 {
			if cmpBound(s.end, last.end) > 0 {
				last.end = s.end
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

// holder returns the span holding key, if any.
func (ss spanSet) holder(key []byte) (span, bool) {
	// The first span whose end is above key is the only one that can hold it.
	i, _ := slices.BinarySearchFunc(ss, key, func(s span, k []byte) int {
		if cmpBound(s.end, k) <= 0 {
			return -1
		}
		return 1
	})
	if i < len(ss) && cmpBound(ss[i].begin, key) <= 0 && cmpBound(key, ss[i].end) < 0 {
		return ss[i], true
	}
	return span{}, false
}

// covers reports whether the request [key, rangeEnd) lies wholly inside the
// union. As in etcd: an empty rangeEnd asks for the one key; "\x00" asks for
// every key from key on; a rangeEnd equal to key asks for nothing and is
// permitted exactly when key itself is. A rangeEnd below key is not handled
// here (see userPerms.permits).
func (ss spanSet) covers(key, rangeEnd []byte) bool {
	h, ok := ss.holder(key)
	if !ok {
		return false
	}
	if len(rangeEnd) == 0 {
		return true
	}
	end := rangeEnd
	if isOpenEnded(end) {
		end = nil
	}
	if cmpBound(key, end) >= 0 {
		return true
	}
	return cmpBound(h.end, end) >= 0
}

// isInverted reports whether a request's range end lies strictly below its
// key: a request that names no key, which etcd's check answers in its own
// way (userPerms.permits).
func isInverted(key, rangeEnd []byte) bool {
	return len(rangeEnd) != 0 && !isOpenEnded(rangeEnd) && cmpBound(rangeEnd, key) < 0
}

// userPerms is one user's permissions merged over all of their roles.
type userPerms struct {
	read, write spanSet

	// readTree and writeTree are etcd's own interval trees of the same
	// permissions, built in etcd's insertion order, and are consulted only
	// for inverted requests (range end below key). For those, etcd's
	// Contains prunes its search by a test that assumes begin < end, so its
	// answer depends on the shape of the tree: the same permissions inserted
	// in another order can answer differently. Such a request reads or
	// deletes nothing, but "never permit what etcd refuses" holds only if we
	// ask the same tree. Refusing every inverted request was the simpler
	// alternative; it was rejected because etcd permits some, and clients
	// would see errors etcd does not give.
	readTree, writeTree adt.IntervalTree
}

// permits answers a check of [key, rangeEnd) against the READ (read) or WRITE
// (!read) side.
func (p *userPerms) permits(read bool, key, rangeEnd []byte) bool {
	set, tree := p.write, p.writeTree
	if read {
		set, tree = p.read, p.readTree
	}
	if isInverted(key, rangeEnd) {
		return tree.Contains(adt.NewBytesAffineInterval(key, rangeEnd))
	}
	return set.covers(key, rangeEnd)
}

// mergePerms builds the merged permissions of a user from their roles.
// Roles that do not exist are skipped, and so are permission types other
// than READ, WRITE and READWRITE.
func mergePerms(u *authpb.User, roles map[string]*authpb.Role) *userPerms {
	var read, write []span
	readTree, writeTree := adt.NewIntervalTree(), adt.NewIntervalTree()
	for _, name := range u.Roles {
		r := roles[name]
		if r == nil {
			continue
		}
		for _, p := range r.KeyPermission {
			s := permSpan(p)
			ivl := adt.NewBytesAffineInterval(s.begin, s.end)
			valid := cmpBound(s.begin, s.end) < 0 // false only for an empty key, never granted
			switch p.PermType {
			case authpb.READ:
				readTree.Insert(ivl, struct{}{})
				if valid {
					read = append(read, s)
				}
			case authpb.WRITE:
				writeTree.Insert(ivl, struct{}{})
				if valid {
					write = append(write, s)
				}
			case authpb.READWRITE:
				readTree.Insert(ivl, struct{}{})
				writeTree.Insert(ivl, struct{}{})
				if valid {
					read = append(read, s)
					write = append(write, s)
				}
			}
		}
	}
	return &userPerms{read: newSpanSet(read), write: newSpanSet(write), readTree: readTree, writeTree: writeTree}
}
