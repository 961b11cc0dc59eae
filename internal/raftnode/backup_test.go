package raftnode

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestBackupRoundTrip writes a backup of an engine's state to a file and
// reads it back: the declared size is the stream's, the file ends with its
// digest at clientv3's alignment, the records are the replicated ones
// (local key and raft keyspace left out), state written after the view was
// taken is not in it, and the file's hash is the view's.
func TestBackupRoundTrip(t *testing.T) {
	eng := openEngine(t, t.TempDir())
	defer eng.Close()
	ls, err := OpenLogStore(eng)
	if err != nil {
		t.Fatal(err)
	}
	ls.localKeys = [][]byte{localKey}
	if err := ls.Save(hardState(2, 1, 20), ents(1, 20, 2), true); err != nil {
		t.Fatal(err)
	}
	big := string(bytes.Repeat([]byte("v"), 300<<10)) // several stream buffers
	writeState(t, eng, 17, map[string]string{"kapple": "1", "kbig": big, "x/rev": "9", "cm1": "m", "cs": "own id"}, nil)
	want := dumpReplicated(t, eng)

	view, err := ls.SnapshotState()
	if err != nil {
		t.Fatal(err)
	}
	if view.Index != 17 || view.Term != 2 {
		t.Fatalf("view at %d/%d, want 17/2", view.Index, view.Term)
	}
	hash, err := view.Hash()
	if err != nil {
		t.Fatal(err)
	}
	rc, size, err := view.Backup()
	if err != nil {
		t.Fatal(err)
	}
	writeState(t, eng, 18, map[string]string{"klate": "x"}, nil) // after the view
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if int64(len(data)) != size || size%backupAlign != BackupDigestLen {
		t.Fatalf("backup of %d bytes, declared %d; want a multiple of %d plus %d", len(data), size, backupAlign, BackupDigestLen)
	}
	path := filepath.Join(t.TempDir(), "b.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var got []string
	info, err := ReadBackup(path, [][]byte{localKey}, func(k, v []byte) error {
		got = append(got, fmt.Sprintf("%q=%q", k, v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("records %v\nwant %v", got, want)
	}
	if info.Index != 17 || info.Term != 2 || info.Hash != hash || info.Records != uint64(len(want)) {
		t.Fatalf("info %+v, want index 17 term 2 hash %x", info, hash)
	}

	// The applied index is not hashed: the same state one empty entry
	// later hashes the same.
	writeState(t, eng, 19, map[string]string{"klate": ""}, nil)
	later, err := ls.SnapshotState()
	if err != nil {
		t.Fatal(err)
	}
	defer later.Close()
	if h, err := later.Hash(); err != nil || h != hash {
		t.Fatalf("hash at index 19 %x (%v), at 17 %x", h, err, hash)
	}

	// Any change of a byte is caught by the digest.
	data[backupHeaderLen+snapshotHeaderLen+3] ^= 1
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBackup(path, [][]byte{localKey}, nil); !errors.Is(err, ErrBackupCorrupt) {
		t.Fatalf("altered file: %v", err)
	}
}
