package raftlog

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.etcd.io/raft/v3/raftpb"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// spares returns the names of the spare segments in fs's directory "log".
func spares(t *testing.T, fs vfs.FS) []string {
	t.Helper()
	names, err := fs.List("log")
	must(t, err)
	var out []string
	for _, n := range names {
		if isSpareName(n) {
			out = append(out, n)
		}
	}
	return out
}

// fillSegment appends small groups to l (and m) until l starts a new
// segment.
func fillSegment(t *testing.T, l *Log, m *model) {
	t.Helper()
	segs := l.w.nextSeq
	for l.w.nextSeq == segs {
		es := ents(m.last()+1, m.last()+1, 1, "fill")
		if err := l.Append(nil, es, true); err != nil {
			t.Fatalf("append %d: %v", m.last()+1, err)
		}
		m.append(nil, es)
	}
}

// TestRollUsesSpare checks that a roll renames the spare prepared ahead
// and creates or preallocates no segment file itself, that a spare is
// ready after each roll, that replay never takes a spare for a segment,
// and that Open removes leftover spares.
func TestRollUsesSpare(t *testing.T) {
	mem := vfs.NewMem()
	var ops []errorfs.Op
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpCreate, errorfs.OpFilePreallocate, errorfs.OpRename:
			ops = append(ops, op)
		}
		return nil
	}))
	opts := Options{SegmentBytes: 1024}
	l := open(t, fs, opts)
	m := &model{}
	// The first roll after Open has no spare: it creates the segment.
	es := ents(1, 2, 1, "first")
	must(t, l.Append(nil, es, true))
	m.append(nil, es)
	if got := spares(t, mem); len(got) != 1 || got[0] != spareName(2) {
		t.Fatalf("spares after the first roll: %v", got)
	}
	for range 4 {
		ops = ops[:0]
		seq := l.w.nextSeq
		fillSegment(t, l, m)
		// The roll renames the spare, then prepares the next one.
		want := []string{
			"rename " + spareName(seq),
			"create " + spareName(seq+1),
			"preallocate " + spareName(seq+1),
		}
		var got []string
		for _, op := range ops {
			got = append(got, strings.ToLower(strings.TrimPrefix(opName(op.Kind), "Op"))+" "+mem.PathBase(op.Path))
		}
		if strings.Join(got, ";") != strings.Join(want, ";") {
			t.Fatalf("roll to segment %d: ops %v, want %v", seq, got, want)
		}
		if s := spares(t, mem); len(s) != 1 || s[0] != spareName(seq+1) {
			t.Fatalf("spares after the roll to %d: %v", seq, s)
		}
		check(t, l, m)
	}
	nsegs := len(l.mu.segs)
	must(t, l.Close())
	if s := spares(t, mem); len(s) != 1 {
		t.Fatalf("spares after Close: %v", s)
	}
	// A spare holding what looks like records is ignored and removed.
	sp, err := mem.Create(mem.PathJoin("log", spareName(99)), vfs.WriteCategoryUnspecified)
	must(t, err)
	_, err = sp.Write(appendRecord(nil, 99, recIdentity, []byte("not-a-segment")))
	must(t, err)
	must(t, sp.Close())
	l = open(t, fs, opts)
	check(t, l, m)
	if s := spares(t, mem); len(s) != 0 {
		t.Fatalf("spares after Open: %v", s)
	}
	if len(l.mu.segs) != nsegs {
		t.Fatalf("%d segments replayed, %d written", len(l.mu.segs), nsegs)
	}
	must(t, l.Close())
}

func opName(k errorfs.OpKind) string {
	switch k {
	case errorfs.OpCreate:
		return "create"
	case errorfs.OpFilePreallocate:
		return "preallocate"
	case errorfs.OpRename:
		return "rename"
	}
	return "other"
}

// TestNoRoom fails the preparation of the spare segment (ENOSPC creating
// or preallocating it): the log is not failed, appends go on in the
// current segment, NoRoom reports the error until a retry (at most once a
// fake second) succeeds on the healthy device. A roll that then finds no
// spare and cannot create its segment fails the log.
func TestNoRoom(t *testing.T) {
	for _, kind := range []errorfs.OpKind{errorfs.OpCreate, errorfs.OpFilePreallocate} {
		t.Run(opName(kind), func(t *testing.T) {
			full := false
			fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
				if full && op.Kind == kind {
					return syscall.ENOSPC
				}
				return nil
			}))
			clock := &fakeClock{t: time.Unix(1000, 0)}
			opts := Options{SegmentBytes: 2048, Now: clock.now}
			l := open(t, fs, opts)
			m := &model{}
			es := ents(1, 1, 1, "a")
			must(t, l.Append(nil, es, true))
			m.append(nil, es)
			if err := l.NoRoom(); err != nil {
				t.Fatalf("NoRoom() = %v with room", err)
			}

			// The device fills: the roll uses the spare, and preparing
			// the next one fails.
			full = true
			fillSegment(t, l, m)
			if err := l.NoRoom(); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("NoRoom() = %v, want ENOSPC", err)
			}
			if err := l.Failed(); err != nil {
				t.Fatalf("Failed() = %v", err)
			}
			if s := spares(t, fs); len(s) != 0 {
				t.Fatalf("a failed spare is left: %v", s)
			}
			// Appends, a compaction and an identity go on in the current
			// segment.
			seq := l.w.nextSeq
			for range 3 {
				es := ents(m.last()+1, m.last()+1, 1, "b")
				must(t, l.Append(hs(1, 1, m.last()), es, true))
				m.append(hs(1, 1, m.last()), es)
			}
			must(t, l.Compact(m.last()-1))
			m.compact(m.last() - 1)
			must(t, l.SetIdentity([]byte("id")))
			m.identity = []byte("id")
			if l.w.nextSeq != seq {
				t.Fatal("the log rolled")
			}
			check(t, l, m)

			// Room again: no retry before a second has passed.
			full = false
			clock.t = clock.t.Add(spareRetry - time.Millisecond)
			app := func() {
				es := ents(m.last()+1, m.last()+1, 1, "c")
				must(t, l.Append(nil, es, true))
				m.append(nil, es)
			}
			app()
			if l.NoRoom() == nil {
				t.Fatal("the spare was retried before a second passed")
			}
			clock.t = clock.t.Add(time.Millisecond)
			app()
			if err := l.NoRoom(); err != nil {
				t.Fatalf("NoRoom() = %v after a successful retry", err)
			}
			if s := spares(t, fs); len(s) != 1 || s[0] != spareName(seq) {
				t.Fatalf("spares after the retry: %v", s)
			}
			check(t, l, m)

			// Full again; the current segment fills and the roll finds
			// the spare prepared by the retry, then none.
			full = true
			fillSegment(t, l, m)
			if l.NoRoom() == nil {
				t.Fatal("NoRoom() = nil with the device full")
			}
			if kind == errorfs.OpFilePreallocate {
				// Preallocation is best effort at a roll with no spare:
				// the log rolls by growing its segment as it writes.
				_ = l.Close()
				return
			}
			ferr := func() error {
				for {
					es := ents(m.last()+1, m.last()+1, 1, "d")
					if err := l.Append(nil, es, true); err != nil {
						return err
					}
					m.append(nil, es)
				}
			}()
			if !errors.Is(ferr, syscall.ENOSPC) || !errors.Is(l.Failed(), syscall.ENOSPC) {
				t.Fatalf("a roll with no spare and no room: %v, Failed() = %v", ferr, l.Failed())
			}
			_ = l.Close()
		})
	}
}

// smallDevice is a file system that reports avail bytes available.
type smallDevice struct {
	vfs.FS
	avail uint64
}

// GetDiskUsage implements vfs.FS.
func (fs smallDevice) GetDiskUsage(string) (vfs.DiskUsage, error) {
	return vfs.DiskUsage{AvailBytes: fs.avail, TotalBytes: 2 * fs.avail}, nil
}

// TestSegmentSize checks that segments shrink to an eighth of the space
// available on a device with less than eight segments' worth.
func TestSegmentSize(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		fs   vfs.FS
		want int64
	}{
		{vfs.NewMem(), DefaultSegmentBytes}, // no disk usage: SegmentBytes
		{smallDevice{vfs.NewMem(), 1 << 40}, DefaultSegmentBytes},
		{smallDevice{vfs.NewMem(), 8 * DefaultSegmentBytes}, DefaultSegmentBytes},
		{smallDevice{vfs.NewMem(), 8*DefaultSegmentBytes - 1}, DefaultSegmentBytes - mib},
		{smallDevice{vfs.NewMem(), 20 * mib}, 2 * mib},
		{smallDevice{vfs.NewMem(), 4 * mib}, mib},
		{smallDevice{vfs.NewMem(), 0}, mib},
	} {
		l := open(t, tc.fs, Options{})
		must(t, l.Append(nil, ents(1, 1, 1, "x"), true))
		if l.w.size != tc.want || l.w.spare == nil || l.w.spare.size != tc.want {
			t.Errorf("segment size %d, spare %+v, want %d", l.w.size, l.w.spare, tc.want)
		}
		// A group larger than the segment still gets the room it needs.
		big := ent(2, 1, strings.Repeat("y", int(tc.want)))
		must(t, l.Append(nil, []*raftpb.Entry{big}, true))
		if l.w.size <= tc.want || l.w.end > l.w.size {
			t.Errorf("want %d: a group of %d bytes ends at %d in a segment of %d", tc.want, len(big.GetData()), l.w.end, l.w.size)
		}
		must(t, l.Close())
	}
}
