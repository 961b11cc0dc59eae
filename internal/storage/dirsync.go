package storage

import (
	"errors"
	"fmt"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A file's fsync makes its contents durable, not its name: the entry that
// names it lives in its directory, and a creation, rename or removal is
// durable only once that directory is synced. Without it, a power loss can
// keep a record that a file is in place (a synced Pebble batch) while
// losing the file's name. These are the one place cairn makes directory
// entries durable; every directory or file the data directory depends on
// is created or moved into place through them. fs is vfs.Default outside
// tests.

// SyncDir fsyncs directory dir, making the entries created, renamed or
// removed in it durable.
func SyncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("storage: open directory %s to sync it: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("storage: sync directory %s: %w", dir, err)
	}
	return nil
}

// MkdirAllSynced creates dir and any missing parents, as os.MkdirAll does,
// and makes each creation durable: it syncs the parent of every directory
// it created. A dir that exists already costs one stat.
func MkdirAllSynced(fs vfs.FS, dir string, perm os.FileMode) error {
	// The directories to create, innermost first, up to one that exists.
	var missing []string
	for p := dir; ; {
		_, err := fs.Stat(p)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("storage: create directory %s: %w", dir, err)
		}
		missing = append(missing, p)
		parent := fs.PathDir(p)
		if parent == p {
			break
		}
		p = parent
	}
	if len(missing) == 0 {
		return nil
	}
	if err := fs.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("storage: create directory %s: %w", dir, err)
	}
	// Outermost first: a parent's entry is durable before its child's.
	for i := len(missing) - 1; i >= 0; i-- {
		if err := SyncDir(fs, fs.PathDir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// RenameSynced renames oldname to newname and makes the rename durable: it
// syncs the directory of newname and, when it differs, that of oldname.
func RenameSynced(fs vfs.FS, oldname, newname string) error {
	if err := fs.Rename(oldname, newname); err != nil {
		return fmt.Errorf("storage: rename %s: %w", oldname, err)
	}
	if err := SyncDir(fs, fs.PathDir(newname)); err != nil {
		return err
	}
	if from := fs.PathDir(oldname); from != fs.PathDir(newname) {
		return SyncDir(fs, from)
	}
	return nil
}
