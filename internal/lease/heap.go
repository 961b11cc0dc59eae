package lease

// leaseHeap is a min-heap of leases on one of two times: the expiry heap
// orders by due (when Expired next looks at a lease), the checkpoint heap
// by cpAt. Each lease records its position in each heap, so a lease's time
// can change, or the lease leave, in O(log n) without a search.
//
// container/heap would box every call through an interface; this one is
// specialised and keeps the index bookkeeping in one place.
type leaseHeap struct {
	items      []*lease
	checkpoint bool // order by cpAt and track cpIdx instead of due/expIdx
}

func (h *leaseHeap) len() int { return len(h.items) }

func (h *leaseHeap) at(x *lease) int64 {
	if h.checkpoint {
		return x.cpAt
	}
	return x.due
}

func (h *leaseHeap) index(x *lease) *int32 {
	if h.checkpoint {
		return &x.cpIdx
	}
	return &x.expIdx
}

func (h *leaseHeap) less(i, j int) bool {
	a, b := h.at(h.items[i]), h.at(h.items[j])
	if a != b {
		return a < b
	}
	// Ties in id order, so Expired reports leases that expire together in
	// the same order on every run.
	return h.items[i].id < h.items[j].id
}

func (h *leaseHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	*h.index(h.items[i]) = int32(i)
	*h.index(h.items[j]) = int32(j)
}

// set adds x, or moves it after its time changed.
func (h *leaseHeap) set(x *lease) {
	i := int(*h.index(x))
	if i < 0 {
		h.items = append(h.items, x)
		i = len(h.items) - 1
		*h.index(x) = int32(i)
		h.up(i)
		return
	}
	if !h.down(i) {
		h.up(i)
	}
}

// remove takes x out of the heap if it is in it.
func (h *leaseHeap) remove(x *lease) {
	i := int(*h.index(x))
	if i < 0 {
		return
	}
	last := len(h.items) - 1
	if i != last {
		h.swap(i, last)
	}
	h.items[last] = nil
	h.items = h.items[:last]
	*h.index(x) = -1
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
	h.shrink()
}

// peek returns the earliest lease, nil if the heap is empty.
func (h *leaseHeap) peek() *lease {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

// clear empties the heap, forgetting every lease's position.
func (h *leaseHeap) clear() {
	for _, x := range h.items {
		*h.index(x) = -1
	}
	h.items = nil
}

func (h *leaseHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// down sifts i down and reports whether it moved.
func (h *leaseHeap) down(i int) bool {
	start, n := i, len(h.items)
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h.less(r, c) {
			c = r
		}
		if !h.less(c, i) {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}

// shrink gives back the backing array once most of it is unused, so a burst
// of a million short leases does not pin its peak memory for good.
func (h *leaseHeap) shrink() {
	if c := cap(h.items); c > 1024 && len(h.items) < c/4 {
		h.items = append(make([]*lease, 0, 2*len(h.items)), h.items...)
	}
}
