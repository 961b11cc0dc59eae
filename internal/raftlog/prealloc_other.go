//go:build !linux

package raftlog

import "github.com/cockroachdb/pebble/v2/vfs"

// preallocate asks f to allocate its first size bytes.
func preallocate(f vfs.File, size int64) error { return f.Preallocate(0, size) }
