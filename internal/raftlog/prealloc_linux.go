package raftlog

import (
	"errors"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// preallocate allocates the blocks of f's first size bytes and sets its
// size (fallocate mode 0), so appends within it change no metadata and a
// data sync is a single flush. A file with no descriptor (MemFS) is asked
// with File.Preallocate instead.
func preallocate(f vfs.File, size int64) error {
	if fd := f.Fd(); fd != vfs.InvalidFd {
		for {
			err := syscall.Fallocate(int(fd), 0, 0, size)
			if err != syscall.EINTR {
				return err
			}
		}
	}
	return f.Preallocate(0, size)
}

// noFallocate reports whether err says the file system cannot preallocate
// at all (as opposed to having no room).
func noFallocate(err error) bool { return errors.Is(err, syscall.EOPNOTSUPP) }
