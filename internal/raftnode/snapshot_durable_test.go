package raftnode

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// TestReceivedSnapshotSurvivesACrash: once ReceiveSnapshot returns, raft
// gets the MsgSnap, and the install that follows records itself in a
// synced batch and relies on the file after a crash
// (RecoverSnapshotInstall). So the file's name must be as durable as that
// record: the snap directory's entry in the data directory, and the
// file's in snap, survive a crash that keeps only what was synced.
func TestReceivedSnapshotSurvivesACrash(t *testing.T) {
	src := openEngine(t, t.TempDir())
	defer src.Close()
	srcLog, err := OpenLogStore(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := srcLog.Save(hardState(2, 1, 9), ents(1, 9, 2), true); err != nil {
		t.Fatal(err)
	}
	writeState(t, src, 9, map[string]string{"ka": "1"}, &raftpb.ConfState{Voters: []uint64{1, 2}})
	snap, err := srcLog.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := srcLog.OpenSnapshot(9)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}

	dst := openEngine(t, t.TempDir())
	defer dst.Close()
	dstLog, err := OpenLogStore(dst)
	if err != nil {
		t.Fatal(err)
	}
	// The received files go to a crashable in-memory filesystem, under the
	// same path; the data directory itself is durable there already.
	fs := vfs.NewCrashableMem()
	if err := storage.MkdirAllSynced(fs, dst.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	dstLog.fs = fs
	if err := dstLog.ReceiveSnapshot(&raftpb.Message{Snapshot: snap}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(snapDir(dst), snapFileName(9, 2))
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	f, err := crashed.Open(name)
	if err != nil {
		t.Fatalf("the received snapshot is gone after a crash: %v", err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after a crash the received snapshot holds %d bytes (%v), want the %d received", len(got), err, len(data))
	}
}
