package storage

import (
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// privateFS is the operating system's file system with the data
// directory's files private to the member's user, as etcd keeps its own:
// files it creates get mode 0600 and directories 0700, whatever the umask,
// where Pebble would create them 0666 and 0755 less the umask.
type privateFS struct{ vfs.FS }

// Create creates name as the wrapped file system does, then makes it 0600.
// Until then the file is reachable by no one else: the data directory is
// 0700.
func (p privateFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.Create(name, category)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(name, 0o600); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// OpenReadWrite opens (creating if needed) name; a file it creates is
// made 0600.
func (p privateFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	_, statErr := os.Stat(name)
	f, err := p.FS.OpenReadWrite(name, category, opts...)
	if err != nil || statErr == nil {
		return f, err
	}
	if err := os.Chmod(name, 0o600); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Lock locks name as the wrapped file system does, creating it 0600.
func (p privateFS) Lock(name string) (io.Closer, error) {
	l, err := p.FS.Lock(name)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(name, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// MkdirAll creates directories 0700, whatever mode Pebble asks for.
func (p privateFS) MkdirAll(dir string, _ os.FileMode) error {
	return p.FS.MkdirAll(dir, 0o700)
}

// Unwrap returns the wrapped file system.
func (p privateFS) Unwrap() vfs.FS { return p.FS }

// PrivateFS returns the operating system's file system as the data
// directory's engine uses it: files created 0600, directories 0700
// (privateFS). The raft log's segment files use it too.
func PrivateFS() vfs.FS { return privateFS{vfs.Default} }
