//go:build !linux

package raftlog

import (
	"errors"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// preallocate asks f to allocate its first size bytes.
func preallocate(f vfs.File, size int64) error { return f.Preallocate(0, size) }

// noFallocate reports whether err says the file system cannot preallocate
// at all (as opposed to having no room).
func noFallocate(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, errors.ErrUnsupported)
}
