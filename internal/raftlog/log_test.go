package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func ent(i, t uint64, data string) *raftpb.Entry {
	e := &raftpb.Entry{Index: new(i), Term: new(t), Type: raftpb.EntryType_EntryNormal.Enum()}
	if data != "" {
		e.Data = []byte(data)
	}
	return e
}

func ents(lo, hi, t uint64, tag string) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, ent(i, t, fmt.Sprintf("%s-%d", tag, i)))
	}
	return out
}

func hs(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

// model is what a Log must hold.
type model struct {
	truncIndex, truncTerm uint64
	ents                  []*raftpb.Entry // truncIndex+1 ..
	hs                    hardState
	identity              []byte
}

func (m *model) clone() *model {
	c := *m
	c.ents = slices.Clone(m.ents)
	c.identity = slices.Clone(m.identity)
	return &c
}

func (m *model) last() uint64 { return m.truncIndex + uint64(len(m.ents)) }

func (m *model) append(h *raftpb.HardState, es []*raftpb.Entry) {
	if h != nil && (h.GetTerm() != 0 || h.GetVote() != 0 || h.GetCommit() != 0) {
		m.hs = hardState{h.GetTerm(), h.GetVote(), h.GetCommit()}
	}
	for _, e := range es {
		if e.GetIndex() <= m.truncIndex {
			continue
		}
		m.ents = append(m.ents[:e.GetIndex()-m.truncIndex-1], e)
	}
}

func (m *model) compact(i uint64) {
	if i <= m.truncIndex {
		return
	}
	m.truncTerm = m.ents[i-m.truncIndex-1].GetTerm()
	m.ents = m.ents[i-m.truncIndex:]
	m.truncIndex = i
}

func (m *model) reset(i, t uint64, h *raftpb.HardState) {
	m.truncIndex, m.truncTerm, m.ents = i, t, nil
	if h != nil {
		m.hs = hardState{h.GetTerm(), h.GetVote(), h.GetCommit()}
	}
}

func (m *model) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "hs %v trunc %d/%d id %q [", m.hs, m.truncIndex, m.truncTerm, m.identity)
	for _, e := range m.ents {
		fmt.Fprintf(&b, " %d/%d:%s", e.GetIndex(), e.GetTerm(), e.GetData())
	}
	b.WriteString(" ]")
	return b.String()
}

// diff returns how l differs from m, "" if it does not.
func diff(l *Log, m *model) string {
	if ti, tt := l.Truncation(); ti != m.truncIndex || tt != m.truncTerm {
		return fmt.Sprintf("truncation %d/%d, want %d/%d", ti, tt, m.truncIndex, m.truncTerm)
	}
	if got := l.LastIndex(); got != m.last() {
		return fmt.Sprintf("last index %d, want %d", got, m.last())
	}
	h := l.HardState()
	if got := (hardState{h.GetTerm(), h.GetVote(), h.GetCommit()}); got != m.hs {
		return fmt.Sprintf("hard state %v, want %v", got, m.hs)
	}
	if got := l.Identity(); !bytes.Equal(got, m.identity) || (got == nil) != (m.identity == nil) {
		return fmt.Sprintf("identity %q, want %q", got, m.identity)
	}
	if t, err := l.Term(m.truncIndex); err != nil || t != m.truncTerm {
		return fmt.Sprintf("Term(trunc) = %d, %v", t, err)
	}
	for _, e := range m.ents {
		if t, err := l.Term(e.GetIndex()); err != nil || t != e.GetTerm() {
			return fmt.Sprintf("Term(%d) = %d, %v, want %d", e.GetIndex(), t, err, e.GetTerm())
		}
	}
	if len(m.ents) > 0 {
		got, err := l.Entries(m.truncIndex+1, m.last()+1, noLimit)
		if err != nil {
			return fmt.Sprintf("Entries: %v", err)
		}
		if len(got) != len(m.ents) {
			return fmt.Sprintf("Entries returned %d entries, want %d", len(got), len(m.ents))
		}
		for i, e := range got {
			if !proto.Equal(e, m.ents[i]) {
				return fmt.Sprintf("entry %d is %v, want %v", m.ents[i].GetIndex(), e, m.ents[i])
			}
		}
		// Limited reads from every start return raft's limitSize prefix.
		for _, maxSize := range []uint64{0, 700} {
			for lo := range m.ents {
				got, err := l.Entries(m.ents[lo].GetIndex(), m.last()+1, maxSize)
				if err != nil {
					return fmt.Sprintf("Entries(%d, %d, %d): %v", m.ents[lo].GetIndex(), m.last()+1, maxSize, err)
				}
				want := limitSize(m.ents[lo:], maxSize)
				if len(got) != len(want) {
					return fmt.Sprintf("Entries(%d, %d, %d) returned %d entries, want %d", m.ents[lo].GetIndex(), m.last()+1, maxSize, len(got), len(want))
				}
				for i, e := range got {
					if !proto.Equal(e, want[i]) {
						return fmt.Sprintf("limited read: entry %d is %v, want %v", want[i].GetIndex(), e, want[i])
					}
				}
			}
		}
	}
	return ""
}

const noLimit = ^uint64(0)

func check(t *testing.T, l *Log, m *model) {
	t.Helper()
	if d := diff(l, m); d != "" {
		t.Fatalf("%s\nwant %v", d, m)
	}
}

func open(t *testing.T, fs vfs.FS, opts Options) *Log {
	t.Helper()
	l, err := Open(fs, "log", opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// reopen closes l and opens the log again, checking it holds m.
func reopen(t *testing.T, fs vfs.FS, l *Log, opts Options, m *model) *Log {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open(t, fs, opts)
	check(t, l, m)
	return l
}

// segmentFiles returns the names of the segment files in fs's directory
// dir, sorted: the spare segment is not one.
func segmentFiles(t *testing.T, fs vfs.FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	must(t, err)
	var out []string
	for _, n := range names {
		if _, ok := parseSegmentName(n); ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestEmpty(t *testing.T) {
	fs := vfs.NewMem()
	l := open(t, fs, Options{})
	m := &model{}
	check(t, l, m)
	if _, err := l.Term(1); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("Term(1) = %v", err)
	}
	if _, err := l.Entries(1, 2, noLimit); err != raft.ErrUnavailable {
		t.Fatalf("Entries(1,2) = %v", err)
	}
	if got, err := l.Entries(1, 1, noLimit); err != nil || len(got) != 0 {
		t.Fatalf("Entries(1,1) = %v, %v", got, err)
	}
	if l.Dir() != "log" {
		t.Fatal(l.Dir())
	}
	must(t, l.Sync())
	must(t, l.Append(nil, nil, true))
	l = reopen(t, fs, l, Options{}, m)
	must(t, l.Close())
	if err := l.Close(); err != ErrClosed {
		t.Fatalf("second Close = %v", err)
	}
	if err := l.Append(hs(1, 0, 0), nil, true); err != ErrClosed {
		t.Fatalf("Append after Close = %v", err)
	}
	if _, err := l.Term(0); err != ErrClosed {
		t.Fatalf("Term after Close = %v", err)
	}
}

func TestAppendOverwriteCompact(t *testing.T) {
	fs := vfs.NewMem()
	opts := Options{SegmentBytes: 4096}
	l := open(t, fs, opts)
	m := &model{}
	app := func(h *raftpb.HardState, es []*raftpb.Entry, sync bool) {
		t.Helper()
		must(t, l.Append(h, es, sync))
		m.append(h, es)
		check(t, l, m)
	}
	app(hs(1, 1, 0), ents(1, 10, 1, "a"), true)
	l = reopen(t, fs, l, opts, m)
	app(nil, ents(11, 20, 1, "a"), false)
	// A new leader overwrites the tail.
	app(hs(2, 2, 5), ents(8, 12, 2, "b"), true)
	l = reopen(t, fs, l, opts, m)
	// A gap is refused, and so are non-consecutive entries.
	if err := l.Append(nil, ents(14, 15, 2, "c"), true); err == nil {
		t.Fatal("gap accepted")
	}
	if err := l.Append(nil, []*raftpb.Entry{ent(13, 2, ""), ent(15, 2, "")}, true); err == nil {
		t.Fatal("non-consecutive entries accepted")
	}
	if l.Failed() != nil {
		t.Fatal(l.Failed())
	}
	must(t, l.Compact(5))
	m.compact(5)
	check(t, l, m)
	if _, err := l.Term(4); err != raft.ErrCompacted {
		t.Fatalf("Term(4) = %v", err)
	}
	if _, err := l.Entries(5, 6, noLimit); err != raft.ErrCompacted {
		t.Fatalf("Entries(5,6) = %v", err)
	}
	if _, err := l.Entries(6, 14, noLimit); err != raft.ErrUnavailable {
		t.Fatalf("Entries(6,14) = %v", err)
	}
	must(t, l.Compact(3)) // below: a no-op
	if err := l.Compact(13); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("Compact past the last index = %v", err)
	}
	l = reopen(t, fs, l, opts, m)
	// Entries at or below the truncation index are skipped.
	app(nil, ents(3, 14, 3, "d"), true)
	l = reopen(t, fs, l, opts, m)
	// Many appends with rolls, then compactions that remove segments.
	for i := uint64(15); i < 400; i += 5 {
		app(hs(3, 3, i-5), ents(i, i+4, 3, "e"), i%2 == 0)
	}
	l = reopen(t, fs, l, opts, m)
	segsBefore := len(l.mu.segs)
	must(t, l.Compact(200))
	m.compact(200)
	check(t, l, m)
	if len(l.mu.segs) >= segsBefore {
		t.Fatalf("compaction removed no segment: %d before, %d after", segsBefore, len(l.mu.segs))
	}
	names := segmentFiles(t, fs, "log")
	if len(names) != len(l.mu.segs) {
		t.Fatalf("files %v, segments %d", names, len(l.mu.segs))
	}
	l = reopen(t, fs, l, opts, m)
	must(t, l.Compact(m.last()))
	m.compact(m.last())
	l = reopen(t, fs, l, opts, m)
	app(nil, ents(m.last()+1, m.last()+3, 4, "f"), true)
	l = reopen(t, fs, l, opts, m)
	must(t, l.Close())
}

func TestEntriesMaxSize(t *testing.T) {
	fs := vfs.NewMem()
	l := open(t, fs, Options{SegmentBytes: 8192})
	es := ents(1, 100, 1, "xxxxxxxxxxxxxxxxxxxx")
	must(t, l.Append(nil, es, true))
	one := uint64(proto.Size(es[0]))
	for _, tc := range []struct {
		max  uint64
		want int
	}{{0, 1}, {one - 1, 1}, {one, 1}, {2*one - 1, 1}, {2 * one, 2}, {10*one + 3, 10}, {noLimit, 99}} {
		got, err := l.Entries(1, 100, tc.max)
		if err != nil || len(got) != tc.want {
			t.Fatalf("Entries(1, 100, %d): %d entries, %v; want %d", tc.max, len(got), err, tc.want)
		}
		for i, e := range got {
			if !proto.Equal(e, es[i]) {
				t.Fatalf("entry %d: %v", i, e)
			}
		}
	}
	// The caller owns what it gets: appending to one entry's data leaves
	// the next one alone.
	got, _ := l.Entries(1, 3, noLimit)
	got[0].Data = append(got[0].Data, "zz"...)
	if !proto.Equal(got[1], es[1]) {
		t.Fatalf("entry 2 changed: %v", got[1])
	}
	must(t, l.Close())
}

func TestResetAndIdentity(t *testing.T) {
	fs := vfs.NewMem()
	opts := Options{SegmentBytes: 4096}
	l := open(t, fs, opts)
	m := &model{}
	must(t, l.SetIdentity([]byte("cluster-1")))
	m.identity = []byte("cluster-1")
	check(t, l, m)
	for i := uint64(1); i < 200; i += 10 {
		must(t, l.Append(hs(1, 1, i), ents(i, i+9, 1, "a"), false))
		m.append(hs(1, 1, i), ents(i, i+9, 1, "a"))
	}
	l = reopen(t, fs, l, opts, m)
	// The identity survives segments being removed: it is restated.
	must(t, l.Compact(150))
	m.compact(150)
	l = reopen(t, fs, l, opts, m)
	must(t, l.Reset(1000, 7, hs(7, 2, 1000)))
	m.reset(1000, 7, hs(7, 2, 1000))
	check(t, l, m)
	if names := segmentFiles(t, fs, "log"); len(names) != 1 {
		t.Fatalf("after Reset: %v", names)
	}
	l = reopen(t, fs, l, opts, m)
	must(t, l.Reset(10, 3, nil)) // backwards, hard state kept
	m.reset(10, 3, nil)
	l = reopen(t, fs, l, opts, m)
	must(t, l.Append(nil, ents(11, 12, 3, "b"), true))
	m.append(nil, ents(11, 12, 3, "b"))
	must(t, l.SetIdentity([]byte("cluster-2")))
	m.identity = []byte("cluster-2")
	l = reopen(t, fs, l, opts, m)
	must(t, l.SetIdentity([]byte{}))
	m.identity = []byte{}
	l = reopen(t, fs, l, opts, m)
	must(t, l.Close())
}

func TestLargeGroup(t *testing.T) {
	fs := vfs.NewMem()
	opts := Options{SegmentBytes: 4096}
	l := open(t, fs, opts)
	m := &model{}
	big := []*raftpb.Entry{ent(1, 1, string(bytes.Repeat([]byte("x"), 10000))), ent(2, 1, "y")}
	must(t, l.Append(hs(1, 0, 0), big, true))
	m.append(hs(1, 0, 0), big)
	must(t, l.Append(nil, ents(3, 4, 1, "z"), true))
	m.append(nil, ents(3, 4, 1, "z"))
	check(t, l, m)
	l = reopen(t, fs, l, opts, m)
	must(t, l.Close())
}

func TestRealFiles(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 1 << 16}
	l, err := Open(vfs.Default, dir, opts)
	must(t, err)
	m := &model{}
	for i := uint64(1); i < 300; i += 3 {
		must(t, l.Append(hs(1, 1, i), ents(i, i+2, 1, "real"), true))
		m.append(hs(1, 1, i), ents(i, i+2, 1, "real"))
	}
	check(t, l, m)
	st, err := vfs.Default.Stat(l.mu.segs[0].name)
	must(t, err)
	if st.Size() != opts.SegmentBytes {
		t.Fatalf("segment size %d, want it preallocated to %d", st.Size(), opts.SegmentBytes)
	}
	must(t, l.Close())
	for round := range 3 {
		l, err = Open(vfs.Default, dir, opts)
		must(t, err)
		check(t, l, m)
		es := ents(m.last()+1, m.last()+2, uint64(2+round), "again")
		must(t, l.Append(hs(uint64(2+round), 1, m.last()), es, true))
		m.append(hs(uint64(2+round), 1, m.last()), es)
		must(t, l.Compact(m.last()-1))
		m.compact(m.last() - 1)
		check(t, l, m)
		must(t, l.Close())
	}
	if names := segmentFiles(t, vfs.Default, dir); len(names) != 1 {
		t.Fatalf("segments left: %v", names)
	}
}

// limitSize is raft's: the entries while their total proto.Size stays
// within maxSize, and at least one.
func limitSize(es []*raftpb.Entry, maxSize uint64) []*raftpb.Entry {
	size := uint64(0)
	for i, e := range es {
		size += uint64(proto.Size(e))
		if i > 0 && size > maxSize {
			return es[:i]
		}
	}
	return es
}
