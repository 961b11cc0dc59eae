package raftnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/storage"
)

// localKey stands for the member's own ID key, which snapshots must leave
// alone.
var localKey = []byte("cs")

// dumpReplicated returns every key/value outside the raft keyspace, except
// localKey, as "key=value" lines.
func dumpReplicated(t *testing.T, eng *storage.Engine) []string {
	t.Helper()
	it, err := eng.DB().NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if k[0] == storage.PrefixRaft || bytes.Equal(k, localKey) {
			continue
		}
		out = append(out, fmt.Sprintf("%q=%q", k, it.Value()))
	}
	return out
}

func writeState(t *testing.T, eng *storage.Engine, applied uint64, kv map[string]string, cs *raftpb.ConfState) {
	t.Helper()
	b := eng.NewBatch()
	for k, v := range kv {
		if v == "" {
			b.Delete([]byte(k), nil)
		} else {
			b.Set([]byte(k), []byte(v), nil)
		}
	}
	b.SetAppliedIndex(applied)
	if cs != nil {
		if err := StageConfState(b, cs); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
}

func TestAppliedIndexKeyIsStorages(t *testing.T) {
	eng := openEngine(t, t.TempDir())
	defer eng.Close()
	writeState(t, eng, 0x0102030405060708, nil, nil)
	v, err := eng.Get(appliedIndexKey)
	if err != nil || len(v) != 8 {
		t.Fatalf("applied index key holds %x, %v", v, err)
	}
	if got, _ := eng.AppliedIndex(); got != 0x0102030405060708 {
		t.Fatalf("AppliedIndex = %x", got)
	}
}

// TestSnapshotTransferAndInstall sends the state of one engine to another
// whose state and log differ, and checks that the receiver ends up with the
// sender's replicated state, its own local key and hard state, an empty log
// starting after the snapshot, and the snapshot's ConfState, also after a
// reopen.
func TestSnapshotTransferAndInstall(t *testing.T) {
	src := openEngine(t, t.TempDir())
	defer src.Close()
	srcLog, err := OpenLogStore(src)
	if err != nil {
		t.Fatal(err)
	}
	srcLog.localKeys = [][]byte{localKey}
	if err := srcLog.Save(hardState(3, 1, 40), ents(1, 40, 3), true); err != nil {
		t.Fatal(err)
	}
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}
	big := string(bytes.Repeat([]byte("v"), 300<<10)) // spans several stream chunks
	writeState(t, src, 37, map[string]string{
		"kapple": "1", "kbanana": big, "x/rev": "9", "cm1": "member one", "cs": "sender's own id", "e1": "event",
	}, cs)
	if err := srcLog.Compact(30); err != nil {
		t.Fatal(err)
	}

	snap, err := srcLog.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if md := snap.GetMetadata(); md.GetIndex() != 37 || md.GetTerm() != 3 || !proto.Equal(md.GetConfState(), cs) {
		t.Fatalf("snapshot metadata = %v, want index 37 term 3 conf %v", md, cs)
	}
	want := dumpReplicated(t, src)
	// State applied after Snapshot is not in the stream.
	writeState(t, src, 38, map[string]string{"kcherry": "late"}, nil)
	again, err := srcLog.Snapshot()
	if err != nil || again.GetMetadata().GetIndex() != 38 {
		t.Fatalf("second snapshot = %v, %v; want index 38", again.GetMetadata(), err)
	}
	rc, size, err := srcLog.OpenSnapshot(37)
	if err != nil {
		t.Fatalf("OpenSnapshot(37) after a newer snapshot: %v", err)
	}
	if size != -1 {
		t.Fatalf("size = %d", size)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	writeState(t, src, 39, nil, nil)
	if _, err := srcLog.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := srcLog.OpenSnapshot(37); !errors.Is(err, ErrSnapshotNotFound) {
		t.Fatalf("OpenSnapshot of a superseded snapshot: %v, want ErrSnapshotNotFound", err)
	}

	dstDir := t.TempDir()
	dst := openEngine(t, dstDir)
	dstLog, err := OpenLogStore(dst)
	if err != nil {
		t.Fatal(err)
	}
	dstLog.localKeys = [][]byte{localKey}
	if err := dstLog.Save(hardState(4, 2, 10), ents(1, 12, 2), true); err != nil {
		t.Fatal(err)
	}
	writeState(t, dst, 10, map[string]string{"kold": "gone", "cs": "receiver's own id", "zz": "above x", "l1": "lease"}, &raftpb.ConfState{Voters: []uint64{2}})
	msg := &raftpb.Message{Type: raftpb.MsgSnap.Enum(), Snapshot: snap}

	// A truncated stream is refused and leaves nothing to install.
	if err := dstLog.ReceiveSnapshot(msg, bytes.NewReader(data[:len(data)-3])); err == nil {
		t.Fatal("truncated stream accepted")
	}
	if err := dstLog.InstallSnapshot(snap); err == nil {
		t.Fatal("installed a snapshot that was never received whole")
	}
	if err := dstLog.ReceiveSnapshot(msg, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := dstLog.InstallSnapshot(snap); err != nil {
		t.Fatal(err)
	}

	check := func(ls *LogStore, eng *storage.Engine) {
		t.Helper()
		if got := dumpReplicated(t, eng); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("receiver state:\n%v\nwant:\n%v", got, want)
		}
		if v, _ := eng.Get(localKey); string(v) != "receiver's own id" {
			t.Fatalf("local key = %q", v)
		}
		if a, _ := eng.AppliedIndex(); a != 37 {
			t.Fatalf("applied index = %d", a)
		}
		first, _ := ls.FirstIndex()
		last, _ := ls.LastIndex()
		if first != 38 || last != 37 {
			t.Fatalf("log is [%d, %d], want empty after 37", first, last)
		}
		if term, err := ls.Term(37); err != nil || term != 3 {
			t.Fatalf("Term(37) = %d, %v", term, err)
		}
		hs, gotCS, _ := ls.InitialState()
		if hs.GetTerm() != 4 || hs.GetVote() != 2 || hs.GetCommit() != 37 {
			t.Fatalf("hard state = %v, want term 4 vote 2 commit 37", hs)
		}
		if !proto.Equal(gotCS, cs) {
			t.Fatalf("conf state = %v, want %v", gotCS, cs)
		}
		if ents, _ := os.ReadDir(filepath.Join(eng.Dir(), snapDirName)); len(ents) != 0 {
			t.Fatalf("snapshot files left: %v", ents)
		}
	}
	check(dstLog, dst)
	// The log continues after the snapshot.
	if err := dstLog.Save(hardState(4, 2, 37), ents(38, 39, 4), true); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst = openEngine(t, dstDir)
	defer dst.Close()
	dstLog, err = OpenLogStore(dst)
	if err != nil {
		t.Fatal(err)
	}
	if first, _ := dstLog.FirstIndex(); first != 38 {
		t.Fatalf("first index after reopen = %d", first)
	}
	checkEntries(t, dstLog, 38, 40, map[uint64]uint64{38: 4, 39: 4})
	if _, err := dstLog.Entries(37, 39, ^uint64(0)); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("Entries below the snapshot: %v", err)
	}
	var it *pebble.Iterator
	it, err = dst.DB().NewIter(&pebble.IterOptions{LowerBound: []byte("zz"), UpperBound: []byte("zz\x00")})
	if err != nil {
		t.Fatal(err)
	}
	if it.First() {
		t.Fatal("a key above the raft keyspace survived the install")
	}
	it.Close()
}

// TestSnapshotInstallResumesAfterCrash interrupts an install after its
// record and a partial rewrite, reopens the engine, and checks that
// RecoverSnapshotInstall completes it (and that Start refuses to run
// before it did).
func TestSnapshotInstallResumesAfterCrash(t *testing.T) {
	src := openEngine(t, t.TempDir())
	defer src.Close()
	srcLog, _ := OpenLogStore(src)
	srcLog.localKeys = [][]byte{localKey}
	if err := srcLog.Save(hardState(2, 1, 9), ents(1, 9, 2), true); err != nil {
		t.Fatal(err)
	}
	cs := &raftpb.ConfState{Voters: []uint64{1, 2}}
	writeState(t, src, 9, map[string]string{"ka": "1", "kb": "2", "x/rev": "3", "cs": "src"}, cs)
	snap, err := srcLog.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := dumpReplicated(t, src)
	rc, _, err := srcLog.OpenSnapshot(9)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()

	dir := t.TempDir()
	dst := openEngine(t, dir)
	dstLog, _ := OpenLogStore(dst)
	dstLog.localKeys = [][]byte{localKey}
	if err := dstLog.Save(hardState(3, 2, 4), ents(1, 5, 1), true); err != nil {
		t.Fatal(err)
	}
	writeState(t, dst, 4, map[string]string{"kold": "x", "cs": "dst"}, nil)
	if err := dstLog.ReceiveSnapshot(&raftpb.Message{Snapshot: snap}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	// The crash: the install record and a cleared state, nothing more.
	csv, _ := proto.Marshal(cs)
	rec := append(append(binary.BigEndian.AppendUint64(nil, 9), binary.BigEndian.AppendUint64(nil, 2)...), csv...)
	b := dst.NewWriteBatch()
	b.Set(keyInstalling, rec, nil)
	b.DeleteRange([]byte("k"), []byte("l"), nil)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	dst.Close()

	dst = openEngine(t, dir)
	defer dst.Close()
	if _, err := Start(Config{ID: 2, Engine: dst, Applied: 4}); err == nil {
		t.Fatal("Start ran on an engine with an interrupted install")
	}
	resumed, err := RecoverSnapshotInstall(dst, [][]byte{localKey})
	if err != nil || !resumed {
		t.Fatalf("RecoverSnapshotInstall = %v, %v", resumed, err)
	}
	if got := dumpReplicated(t, dst); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state after the resumed install:\n%v\nwant:\n%v", got, want)
	}
	if v, _ := dst.Get(localKey); string(v) != "dst" {
		t.Fatalf("local key = %q", v)
	}
	ls, err := OpenLogStore(dst)
	if err != nil {
		t.Fatal(err)
	}
	if first, _ := ls.FirstIndex(); first != 10 {
		t.Fatalf("log starts at %d after the resumed install, want 10", first)
	}
	if _, gotCS, _ := ls.InitialState(); !proto.Equal(gotCS, cs) {
		t.Fatalf("conf state %v, want %v", gotCS, cs)
	}
	if resumed, err := RecoverSnapshotInstall(dst, [][]byte{localKey}); resumed || err != nil {
		t.Fatalf("second RecoverSnapshotInstall = %v, %v", resumed, err)
	}
}
