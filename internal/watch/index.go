package watch

import (
	"bytes"
	"math/rand/v2"
)

// index finds the watchers whose key range contains a key without looking
// at the others: single-key watchers in a map by key, range and from-key
// watchers in an interval tree (a treap ordered by interval, each node
// augmented with the largest end in its subtree). A lookup costs a map hit
// plus O(log n + k) tree nodes for k matching intervals, so 100,000
// watchers on unrelated ranges cost an event nothing.
//
// Watchers with the same range share one node (or map entry), a slice of
// watchers; each watcher remembers its position in that slice so removal
// is O(log n). A watcher is in at most one index at a time: the hub's
// synced index or its stream's unsynced index. The index is not safe for
// concurrent use; its owner's lock guards it.
type index struct {
	keys map[string]*wset
	root *node
	n    int
}

// wset is the watchers of one exact range.
type wset struct{ ws []*watcher }

func (s *wset) add(w *watcher) {
	w.pos = len(s.ws)
	s.ws = append(s.ws, w)
}

func (s *wset) remove(w *watcher) {
	last := len(s.ws) - 1
	if w.pos > last || s.ws[w.pos] != w {
		panic("watch: watcher not at its recorded position")
	}
	s.ws[w.pos] = s.ws[last]
	s.ws[w.pos].pos = w.pos
	s.ws[last] = nil
	s.ws = s.ws[:last]
	w.pos = -1
}

// node is one interval [start, end) of the treap, end nil meaning +∞ (a
// from-key watch). maxEnd is the largest end in the subtree.
type node struct {
	start, end  []byte
	maxEnd      []byte
	prio        uint64
	left, right *node
	set         wset
}

// cmpEnd orders interval ends with nil (+∞) above every key.
func cmpEnd(a, b []byte) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// keyBelowEnd reports whether key < end, end nil meaning +∞.
func keyBelowEnd(key, end []byte) bool { return end == nil || bytes.Compare(key, end) < 0 }

func cmpInterval(s1, e1, s2, e2 []byte) int {
	if c := bytes.Compare(s1, s2); c != 0 {
		return c
	}
	return cmpEnd(e1, e2)
}

func newIndex() index { return index{keys: make(map[string]*wset)} }

// len returns the number of watchers in the index.
func (x *index) len() int { return x.n }

// add puts w in the index under its range.
func (x *index) add(w *watcher) {
	x.n++
	if w.isKey() {
		s := x.keys[string(w.key)]
		if s == nil {
			s = &wset{}
			x.keys[string(w.key)] = s
		}
		s.add(w)
		return
	}
	x.root = x.insert(x.root, w)
}

// remove takes w out of the index; w must be in it.
func (x *index) remove(w *watcher) {
	x.n--
	if w.isKey() {
		s := x.keys[string(w.key)]
		s.remove(w)
		if len(s.ws) == 0 {
			delete(x.keys, string(w.key))
		}
		return
	}
	x.root = x.delete(x.root, w)
}

// stab calls fn for every watcher whose range contains key. fn must not
// change the index.
func (x *index) stab(key []byte, fn func(*watcher)) {
	if s := x.keys[string(key)]; s != nil {
		for _, w := range s.ws {
			fn(w)
		}
	}
	stabNode(x.root, key, fn)
}

func stabNode(n *node, key []byte, fn func(*watcher)) {
	for n != nil && keyBelowEnd(key, n.maxEnd) {
		stabNode(n.left, key, fn)
		if bytes.Compare(n.start, key) > 0 {
			// Every interval to the right starts even later.
			return
		}
		if keyBelowEnd(key, n.end) {
			for _, w := range n.set.ws {
				fn(w)
			}
		}
		n = n.right
	}
}

// each calls fn for every watcher in the index. fn must not change it.
func (x *index) each(fn func(*watcher)) {
	for _, s := range x.keys {
		for _, w := range s.ws {
			fn(w)
		}
	}
	eachNode(x.root, fn)
}

func eachNode(n *node, fn func(*watcher)) {
	for n != nil {
		eachNode(n.left, fn)
		for _, w := range n.set.ws {
			fn(w)
		}
		n = n.right
	}
}

func (n *node) fix() {
	n.maxEnd = n.end
	if n.left != nil && cmpEnd(n.left.maxEnd, n.maxEnd) > 0 {
		n.maxEnd = n.left.maxEnd
	}
	if n.right != nil && cmpEnd(n.right.maxEnd, n.maxEnd) > 0 {
		n.maxEnd = n.right.maxEnd
	}
}

func rotateRight(n *node) *node {
	l := n.left
	n.left = l.right
	l.right = n
	n.fix()
	l.fix()
	return l
}

func rotateLeft(n *node) *node {
	r := n.right
	n.right = r.left
	r.left = n
	n.fix()
	r.fix()
	return r
}

func (x *index) insert(n *node, w *watcher) *node {
	end := w.rangeEnd()
	if n == nil {
		nn := &node{start: w.key, end: end, prio: rand.Uint64()}
		nn.set.add(w)
		nn.fix()
		return nn
	}
	switch c := cmpInterval(w.key, end, n.start, n.end); {
	case c == 0:
		n.set.add(w)
		return n
	case c < 0:
		n.left = x.insert(n.left, w)
		if n.left.prio > n.prio {
			return rotateRight(n)
		}
	default:
		n.right = x.insert(n.right, w)
		if n.right.prio > n.prio {
			return rotateLeft(n)
		}
	}
	n.fix()
	return n
}

func (x *index) delete(n *node, w *watcher) *node {
	if n == nil {
		panic("watch: removing a watcher that is not in the index")
	}
	switch c := cmpInterval(w.key, w.rangeEnd(), n.start, n.end); {
	case c < 0:
		n.left = x.delete(n.left, w)
	case c > 0:
		n.right = x.delete(n.right, w)
	default:
		n.set.remove(w)
		if len(n.set.ws) > 0 {
			return n
		}
		return x.dropNode(n)
	}
	n.fix()
	return n
}

// dropNode removes n from its subtree by rotating it down to a leaf.
func (x *index) dropNode(n *node) *node {
	switch {
	case n.left == nil:
		return n.right
	case n.right == nil:
		return n.left
	case n.left.prio > n.right.prio:
		r := rotateRight(n)
		r.right = x.dropNode(n)
		r.fix()
		return r
	default:
		r := rotateLeft(n)
		r.left = x.dropNode(n)
		r.fix()
		return r
	}
}
