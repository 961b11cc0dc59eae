package storage

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// survives reports whether name exists after a crash that keeps exactly
// what was synced.
func survives(fs *vfs.MemFS, name string) bool {
	_, err := fs.CrashClone(vfs.CrashCloneCfg{}).Stat(name)
	return err == nil
}

func TestDirectoryEntriesSurviveACrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	if err := MkdirAllSynced(fs, "/data/member/snap", 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"/data", "/data/member", "/data/member/snap"} {
		if !survives(fs, d) {
			t.Fatalf("%s was lost in a crash after MkdirAllSynced", d)
		}
	}
	// Existing directories are left alone.
	if err := MkdirAllSynced(fs, "/data/member", 0o700); err != nil {
		t.Fatal(err)
	}

	// A synced file renamed into another directory: both entries move.
	f, err := fs.Create("/data/member.tmp", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := SyncDir(fs, "/data"); err != nil {
		t.Fatal(err)
	}
	if err := RenameSynced(fs, "/data/member.tmp", "/data/member/snap/file"); err != nil {
		t.Fatal(err)
	}
	if !survives(fs, "/data/member/snap/file") {
		t.Fatal("the renamed file was lost in a crash after RenameSynced")
	}
	if survives(fs, "/data/member.tmp") {
		t.Fatal("the old name came back after a crash")
	}

	// The test's own check: without the syncs, the crash does lose them.
	if err := fs.MkdirAll("/other/dir", 0o700); err != nil {
		t.Fatal(err)
	}
	if survives(fs, "/other") {
		t.Fatal("an unsynced directory survived the crash clone; the test proves nothing")
	}
}

// TestOpenMakesTheDataDirectoryDurable: a new member's data directory, and
// the parents Open created for it, outlive a power loss once Open returned
// and something was written with sync. Pebble syncs what it creates inside
// the directory, not the directory's own entry in its parent.
func TestOpenMakesTheDataDirectoryDurable(t *testing.T) {
	fs := vfs.NewCrashableMem()
	if err := MkdirAllSynced(fs, "/var", 0o700); err != nil {
		t.Fatal(err)
	}
	e, err := Open("/var/lib/member", Options{FS: fs, CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	b := e.NewWriteBatch()
	b.SetAppliedIndex(7)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = Open("/var/lib/member", Options{FS: crashed, CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got, err := e.AppliedIndex(); err != nil || got != 7 {
		t.Fatalf("after a crash the data directory holds applied index %d (%v), want 7", got, err)
	}
}
