package server

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cairn-db/cairn/internal/etcdbackup"
	"github.com/cairn-db/cairn/internal/raftnode"
)

// Backup formats SnapshotInfo.Format names.
const (
	// FormatEtcd is etcd's backup file: a bbolt database, with a sha256
	// digest appended when etcdctl saved it (package etcdbackup). Cairn's
	// Maintenance.Snapshot writes it.
	FormatEtcd = "etcd"
	// FormatCairn is cairn's earlier backup file (raftnode.ReadBackup),
	// still read.
	FormatCairn = "cairn"
)

// isEtcdBackup tells the two backup formats apart by the file's first
// bytes. A file that is neither is refused, as corrupt.
func isEtcdBackup(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 32)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, err
	}
	head = head[:n]
	switch {
	case raftnode.IsBackup(head):
		return false, nil
	case etcdbackup.IsDatabase(head):
		return true, nil
	}
	return false, fmt.Errorf("%w: %s is neither a cairn nor an etcd snapshot (it starts with neither cairn's snapshot header nor a bbolt database)",
		raftnode.ErrBackupCorrupt, path)
}

// etcdCorrupt makes a damaged etcd file's error match
// raftnode.ErrBackupCorrupt too, as a damaged cairn file's does.
func etcdCorrupt(err error) error {
	if errors.Is(err, etcdbackup.ErrCorrupt) {
		return fmt.Errorf("%w: %w", raftnode.ErrBackupCorrupt, err)
	}
	return err
}

func etcdSnapshotInfo(info etcdbackup.Info) SnapshotInfo {
	return SnapshotInfo{
		Format:          FormatEtcd,
		Hash:            info.Hash,
		Revision:        info.Revision,
		CompactRevision: info.CompactRevision,
		TotalKeys:       info.TotalKeys,
		TotalSize:       info.DBSize,
		Index:           info.ConsistentIndex,
		Version:         info.StorageVersion,
	}
}
