package embed

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// privateDirMode is the data directory's mode: the member's user only, as
// etcd's fileutil.PrivateDirMode.
const privateDirMode fs.FileMode = 0o700

// privateDir creates dir (and its parents) with mode 0700, or, when it
// exists with another mode, logs etcd's warning and sets it to 0700: etcd
// only warns, but a data directory others can read gives away every key.
func privateDir(lg *slog.Logger, dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, privateDirMode); err != nil {
			return err
		}
		// MkdirAll's mode is filtered by the umask; 0700 is what is meant.
		return os.Chmod(dir, privateDirMode)
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st.Mode().Perm() != privateDirMode {
		lg.Warn("check file permission", "error", fmt.Sprintf("directory %q exist, but the permission is %q. The recommended permission is %q to prevent possible unprivileged access to the data", dir, st.Mode(), os.FileMode(os.ModeDir|privateDirMode)))
		if err := os.Chmod(dir, privateDirMode); err != nil {
			return fmt.Errorf("set the permission of %s to %v: %w", dir, privateDirMode, err)
		}
		lg.Info("set the directory's permission", "dir", dir, "permission", os.FileMode(os.ModeDir|privateDirMode).String())
	}
	return nil
}

// prepareDataDir makes the data directory private before the member opens
// it: the directory itself 0700 (see privateDir), and, since an earlier
// version or a copy may have left looser modes, no directory or regular
// file in it with any permission for the group or others (the owner's
// bits are kept). Sockets and links are left alone. What the member writes
// afterwards is created with those modes (the storage engine's files 0600,
// its directories 0700).
func prepareDataDir(lg *slog.Logger, dir string) error {
	if err := privateDir(lg, dir); err != nil {
		return fmt.Errorf("embed: data directory: %w", err)
	}
	fixed := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		want := info.Mode().Perm() &^ 0o077
		if info.Mode().Perm() == want {
			return nil
		}
		fixed++
		return os.Chmod(path, want)
	})
	if err != nil {
		return fmt.Errorf("embed: data directory permissions: %w", err)
	}
	if fixed > 0 {
		lg.Warn("set the permission of files and directories in the data directory to the member's user only", "dir", dir, "changed", fixed)
	}
	return nil
}
