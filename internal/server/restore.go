package server

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairn-db/cairn/internal/etcdbackup"
	"github.com/cairn-db/cairn/internal/membership"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/raftlog"
	"github.com/cairn-db/cairn/internal/raftnode"
	"github.com/cairn-db/cairn/internal/storage"
)

// RestoreConfig says where a backup goes and which new cluster the
// restored member belongs to; the fields are the server flags of the same
// names, and a member later started on DataDir must be given the same.
type RestoreConfig struct {
	// SnapshotPath is the backup file (Maintenance.Snapshot's stream, as
	// `etcdctl snapshot save` writes it).
	SnapshotPath string
	// DataDir is the data directory to create; it must not exist, or be
	// empty.
	DataDir string
	// WalDir, if set, is the directory to create for the raft log, which
	// then has an engine of its own there (the server's --wal-dir, which a
	// member started on DataDir must be given); it must not exist, or be
	// empty, and must not be DataDir. Empty keeps the log in DataDir.
	WalDir string
	// Name is this member's name in InitialCluster.
	Name string
	// InitialCluster names every member of the new cluster
	// ("name=url,..."); ClusterToken is the initial cluster token.
	InitialCluster string
	ClusterToken   string
	// PeerURLs are this member's advertised peer URLs; they must match its
	// entry in InitialCluster.
	PeerURLs []string
	// FS is the file system DataDir and WalDir are on; nil means the
	// operating system's. SnapshotPath is always read from the operating
	// system's. Crash tests restore onto vfs.NewCrashableMem.
	FS vfs.FS
}

// RestoreResult describes a restored data directory.
type RestoreResult struct {
	// ClusterID and MemberID are the new cluster's and this member's IDs,
	// derived from the configuration as a new cluster's are.
	ClusterID, MemberID uint64
	// Members is the new member list.
	Members []membership.Member
	// Snapshot describes the backup.
	Snapshot SnapshotInfo
}

// SnapshotInfo is what `cairn snapshot status` reports about a backup.
type SnapshotInfo struct {
	// Format is the file's format: FormatEtcd or FormatCairn.
	Format string
	// Hash is, for an etcd file, the hash `etcdutl snapshot status`
	// prints (a CRC-32 of the database's buckets); for a cairn file, the
	// CRC-32 of the backup's replicated state, the hash Maintenance.Hash
	// gave at the moment it was taken.
	Hash uint32
	// Revision and CompactRevision are the store's revision and
	// compaction revision (-1: none).
	Revision, CompactRevision int64
	// TotalKeys counts, for an etcd file, the live keys at Revision, as
	// etcdutl 3.7 does; for a cairn file the stored key versions (every
	// revision since the compaction, tombstones included).
	TotalKeys int64
	// TotalSize is the database's size in bytes (an etcd file's without
	// its digest, as etcdutl reports it; a cairn file's whole size).
	TotalSize int64
	// Index is the raft index the state was taken at (an etcd file's
	// consistent index).
	Index uint64
	// Version is an etcd file's storage version ("" for a cairn file, or
	// an etcd file from before 3.6), as etcdutl reports it.
	Version string
}

// errDataDirExists is etcdutl's refusal of a data directory in use;
// errWalDirExists the same for --wal-dir.
var (
	errDataDirExists = errors.New("data-dir not empty or could not be read")
	errWalDirExists  = errors.New("wal-dir not empty or could not be read")
)

// restoreBatchBytes bounds one batch of a restore.
const restoreBatchBytes = 4 << 20

// restoredTerm is the raft term a restored cluster starts at (the
// truncation point's term), as etcd's restore starts at term 1.
const restoredTerm = 1

// SnapshotStatus checks the backup at path (its sha256 digest first) and
// describes it. A truncated or altered file gives an error wrapping
// raftnode.ErrBackupCorrupt.
func SnapshotStatus(path string) (SnapshotInfo, error) {
	etcd, err := isEtcdBackup(path)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if etcd {
		info, err := etcdbackup.Status(path)
		if err != nil {
			return SnapshotInfo{}, etcdCorrupt(err)
		}
		return etcdSnapshotInfo(info), nil
	}
	var st mvcc.StateStats
	info, err := raftnode.ReadBackup(path, membership.LocalKeys(), func(k, v []byte) error {
		st.Add(k, v)
		return nil
	})
	if err != nil {
		return SnapshotInfo{}, err
	}
	st.Finish()
	return snapshotInfo(info, st), nil
}

func snapshotInfo(info raftnode.BackupInfo, st mvcc.StateStats) SnapshotInfo {
	return SnapshotInfo{
		Format:          FormatCairn,
		Hash:            info.Hash,
		Revision:        st.Revision,
		CompactRevision: st.CompactRevision,
		TotalKeys:       st.Versions,
		TotalSize:       info.Size,
		Index:           info.Index,
	}
}

// RestoreSnapshot creates cfg.DataDir holding the backup's state for one
// member of a new cluster, as `etcdutl snapshot restore` does: the keys at
// every revision the backup holds, its revision and compaction, and its
// leases; a member list, cluster ID and member IDs derived from cfg as a
// new cluster's are; and a fresh raft log. The backup's own member list,
// removed members and alarms are dropped: they describe the old cluster.
// Every member of the new cluster restores the same file with its own
// Name, then starts with the same flags; the --initial-cluster settings
// are not read again, as for any existing data directory.
//
// The file's digest is checked before anything is written; an error
// wraps raftnode.ErrBackupCorrupt for a truncated or altered file. The
// directory is built beside cfg.DataDir and renamed into place only once
// complete, so a failed restore leaves nothing behind. The raft log's
// segment files go to cfg.WalDir, built and renamed into place the same
// way (before DataDir), or, without it, to the data directory's own wal
// directory; the two name each other as a starting member pairs them, so
// a member started on DataDir without that --wal-dir refuses to start, as
// does one given a --wal-dir for a restore made without.
//
// A crash (power loss) during a restore leaves either no cfg.DataDir (or
// the empty one there was), and the same restore run again succeeds, or
// the complete one. The rerun removes what the crashed one left: its
// hidden directories beside cfg.DataDir and cfg.WalDir, and a cfg.WalDir
// it had renamed into place before the crash came (marked, until
// cfg.DataDir is in place, by a file named RESTORE-INCOMPLETE); a
// --wal-dir in use without that mark is refused as before.
func RestoreSnapshot(cfg RestoreConfig) (RestoreResult, error) {
	var res RestoreResult
	if cfg.DataDir == "" {
		return res, errors.New("server: restore: no data directory given")
	}
	if cfg.FS == nil {
		cfg.FS = vfs.Default
	}
	fs := cfg.FS
	if !emptyOrMissing(fs, cfg.DataDir) {
		return res, fmt.Errorf("%w: %q", errDataDirExists, cfg.DataDir)
	}
	walInside, orphan, err := checkRestoreWalDir(cfg)
	if err != nil {
		return res, err
	}
	members, self, err := restoredMembers(cfg)
	if err != nil {
		return res, err
	}
	ids := make([]uint64, len(members))
	for i, m := range members {
		ids[i] = m.ID
	}
	res.ClusterID, res.MemberID, res.Members = membership.ClusterID(ids), self.ID, members

	// Check the whole file before creating anything.
	etcd, err := isEtcdBackup(cfg.SnapshotPath)
	if err != nil {
		return res, err
	}
	if etcd {
		_, err = etcdbackup.Read(cfg.SnapshotPath, nil)
		err = etcdCorrupt(err)
	} else {
		_, err = raftnode.ReadBackup(cfg.SnapshotPath, membership.LocalKeys(), nil)
	}
	if err != nil {
		return res, err
	}
	// What an interrupted restore left beside the two goes first: each is
	// a whole copy of a backup, hidden, that nothing else would remove.
	if err := removeRestoreLeftovers(fs, cfg.DataDir); err != nil {
		return res, err
	}
	if cfg.WalDir != "" && walInside == "" {
		if err := removeRestoreLeftovers(fs, cfg.WalDir); err != nil {
			return res, err
		}
	}
	tmp, err := tempBeside(fs, cfg.DataDir)
	if err != nil {
		return res, err
	}
	// The log's directory is built beside its place too, or inside the
	// data directory's temporary one when it goes inside the data
	// directory (--wal-dir data/wal), and moves with it.
	var walTmp string
	switch {
	case walInside != "":
		walTmp = filepath.Join(tmp, walInside)
	default:
		if walTmp, err = tempBeside(fs, cfg.WalDir); err != nil {
			fs.RemoveAll(tmp)
			return res, err
		}
		if err = markIncomplete(fs, walTmp); err != nil {
			fs.RemoveAll(tmp)
			fs.RemoveAll(walTmp)
			return res, err
		}
	}
	cleanUp := func() {
		fs.RemoveAll(tmp)
		if walTmp != "" && walInside == "" {
			fs.RemoveAll(walTmp)
		}
	}
	info, err := restoreInto(tmp, walTmp, cfg, res, etcd)
	if err != nil {
		cleanUp()
		return res, err
	}
	res.Snapshot = info
	// The log first: a crash between the two renames leaves a log that no
	// data directory names, never a data directory that starts without its
	// log. The log carries restoreIncomplete until the data directory is
	// in place, so a second restore knows it for a crashed restore's and
	// replaces it (orphan), where it refuses any other --wal-dir in use.
	if walTmp != "" && walInside == "" {
		if orphan {
			if err := removeOrphanLog(fs, cfg.WalDir); err != nil {
				cleanUp()
				return res, err
			}
		}
		fs.Remove(cfg.WalDir) // an empty directory, if any
		if err := storage.RenameSynced(fs, walTmp, cfg.WalDir); err != nil {
			cleanUp()
			return res, fmt.Errorf("server: restore: %w", err)
		}
		walTmp = cfg.WalDir // ours now: removed if the data directory fails
	}
	fs.Remove(cfg.DataDir) // an empty directory, if any
	// Synced: a restored member that starts must find its directory after
	// a power loss, not an empty place where a new member would bootstrap.
	if err := storage.RenameSynced(fs, tmp, cfg.DataDir); err != nil {
		cleanUp()
		return res, fmt.Errorf("server: restore: %w", err)
	}
	if walTmp != "" && walInside == "" {
		// Done: the log is the data directory's now. The restore is
		// complete whether or not the mark goes: should removing it fail,
		// or a crash come first, it stays, harmless to the member; only a
		// restore into an empty or missing data directory acts on it.
		if fs.Remove(fs.PathJoin(cfg.WalDir, restoreIncomplete)) == nil {
			storage.SyncDir(fs, cfg.WalDir)
		}
	}
	return res, nil
}

// restoreIncomplete is the file a restore's --wal-dir holds until the data
// directory that names it is in place.
const restoreIncomplete = "RESTORE-INCOMPLETE"

// markIncomplete puts a durable restoreIncomplete in dir.
func markIncomplete(fs vfs.FS, dir string) error {
	f, err := fs.Create(fs.PathJoin(dir, restoreIncomplete), vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("server: restore: %w", err)
	}
	_, err = f.Write([]byte("cairn snapshot restore is building this directory and its data directory; if it was interrupted, running it again replaces this directory\n"))
	if err = errors.Join(err, f.Sync(), f.Close(), storage.SyncDir(fs, dir)); err != nil {
		return fmt.Errorf("server: restore: %w", err)
	}
	return nil
}

// removeOrphanLog removes the --wal-dir a crashed restore left: renamed
// aside first (synced), so a crash while removing it leaves either the
// whole marked directory or nothing in its place, never a part without
// its mark.
func removeOrphanLog(fs vfs.FS, dir string) error {
	aside, err := tempBeside(fs, dir)
	if err != nil {
		return err
	}
	if err := fs.RemoveAll(aside); err != nil {
		return fmt.Errorf("server: restore: %w", err)
	}
	if err := storage.RenameSynced(fs, dir, aside); err != nil {
		return fmt.Errorf("server: restore: replace the log a crashed restore left in %s: %w", dir, err)
	}
	if err := fs.RemoveAll(aside); err != nil {
		return fmt.Errorf("server: restore: %w", err)
	}
	return nil
}

// emptyOrMissing reports whether dir does not exist or is empty.
func emptyOrMissing(fs vfs.FS, dir string) bool {
	ents, err := fs.List(dir)
	return err == nil && len(ents) == 0 || errors.Is(err, os.ErrNotExist)
}

// checkRestoreWalDir refuses a --wal-dir a restore cannot build: in use,
// the data directory itself, or a directory the data directory would be
// inside. It returns the log's path relative to the data directory when
// it goes inside it (logDirName without a --wal-dir; "" otherwise), and whether the --wal-dir holds the
// log of a restore that crashed before its data directory was in place
// (which the restore replaces). The caller has checked that the data
// directory is empty or missing.
func checkRestoreWalDir(cfg RestoreConfig) (string, bool, error) {
	if cfg.WalDir == "" {
		return logDirName, false, nil
	}
	data, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return "", false, fmt.Errorf("server: restore: %w", err)
	}
	wal, err := filepath.Abs(cfg.WalDir)
	if err != nil {
		return "", false, fmt.Errorf("server: restore: %w", err)
	}
	if wal == data {
		return "", false, fmt.Errorf("server: restore: --wal-dir %q is the data directory: give another directory, or none to keep the raft log in the data directory", cfg.WalDir)
	}
	if rel, err := filepath.Rel(wal, data); err == nil && filepath.IsLocal(rel) {
		return "", false, fmt.Errorf("server: restore: the data directory %q is inside --wal-dir %q: give directories side by side, or the log's inside the data directory's", cfg.DataDir, cfg.WalDir)
	}
	if rel, err := filepath.Rel(data, wal); err == nil && filepath.IsLocal(rel) {
		return rel, false, nil // inside the empty or missing data directory
	}
	if emptyOrMissing(cfg.FS, cfg.WalDir) {
		return "", false, nil
	}
	// With the data directory empty or missing, a log still marked is a
	// crashed restore's: no data directory names it.
	if _, err := cfg.FS.Stat(cfg.FS.PathJoin(cfg.WalDir, restoreIncomplete)); err == nil {
		return "", true, nil
	}
	return "", false, fmt.Errorf("%w: %q", errWalDirExists, cfg.WalDir)
}

// tempBeside creates an empty directory beside dir (its parent created,
// synced, if missing), where a restore builds what it renames to dir.
func tempBeside(fs vfs.FS, dir string) (string, error) {
	parent := filepath.Dir(filepath.Clean(dir))
	if err := storage.MkdirAllSynced(fs, parent, 0o700); err != nil {
		return "", fmt.Errorf("server: restore: %w", err)
	}
	// vfs has no MkdirTemp: a random name not taken yet.
	for {
		tmp := filepath.Join(parent, restoreTempPrefix(dir)+strconv.FormatUint(rand.Uint64(), 36))
		if _, err := fs.Stat(tmp); err == nil {
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("server: restore: %w", err)
		}
		if err := fs.MkdirAll(tmp, 0o700); err != nil {
			return "", fmt.Errorf("server: restore: %w", err)
		}
		return tmp, nil
	}
}

// removeRestoreLeftovers removes the directories tempBeside made for dir
// that an interrupted restore left behind.
func removeRestoreLeftovers(fs vfs.FS, dir string) error {
	parent := filepath.Dir(filepath.Clean(dir))
	names, err := fs.List(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("server: restore: %w", err)
	}
	prefix := restoreTempPrefix(dir)
	for _, name := range names {
		if strings.HasPrefix(name, prefix) {
			if err := fs.RemoveAll(filepath.Join(parent, name)); err != nil {
				return fmt.Errorf("server: restore: remove what an interrupted restore left: %w", err)
			}
		}
	}
	return nil
}

// restoreTempPrefix starts the name of every directory tempBeside makes
// for dir.
func restoreTempPrefix(dir string) string {
	return "." + filepath.Base(filepath.Clean(dir)) + ".restore-"
}

// restoredMembers derives the new cluster's members, and finds this one.
func restoredMembers(cfg RestoreConfig) ([]membership.Member, membership.Member, error) {
	initial, err := membership.ParseInitialCluster(cfg.InitialCluster)
	if err != nil {
		return nil, membership.Member{}, err
	}
	members, err := membership.InitialMembers(initial, cfg.ClusterToken)
	if err != nil {
		return nil, membership.Member{}, err
	}
	i := slices.IndexFunc(members, func(m membership.Member) bool { return m.Name == cfg.Name })
	if i < 0 {
		return nil, membership.Member{}, fmt.Errorf("server: couldn't find local name %q in the initial cluster configuration", cfg.Name)
	}
	own, err := membership.NormalizeURLs(cfg.PeerURLs)
	if err != nil {
		return nil, membership.Member{}, err
	}
	if !slices.Equal(members[i].PeerURLs, own) {
		return nil, membership.Member{}, fmt.Errorf("server: --initial-cluster has %s=%v but --initial-advertise-peer-urls is %v",
			cfg.Name, members[i].PeerURLs, own)
	}
	return members, members[i], nil
}

// oldClusterKey reports whether a backup's key describes the old cluster
// (its ID, members, removed members, alarms): everything in the
// membership keyspace, which the restore writes anew.
func oldClusterKey(k []byte) bool { return len(k) > 0 && k[0] == storage.PrefixMembership }

// restoreInto writes the restored member into dir, and its raft log's
// segment files into walDir.
func restoreInto(dir, walDir string, cfg RestoreConfig, res RestoreResult, etcd bool) (SnapshotInfo, error) {
	eng, err := storage.Open(dir, storage.Options{FS: cfg.FS})
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer eng.Close()
	files, err := raftlog.Open(cfg.FS, walDir, raftlog.Options{})
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer files.Close()
	var st mvcc.StateStats
	b := eng.NewWriteBatch()
	put := func(k, v []byte) error {
		st.Add(k, v)
		if oldClusterKey(k) {
			return nil
		}
		if err := b.Set(k, v, nil); err != nil {
			return err
		}
		if b.Len() >= restoreBatchBytes {
			if err := b.Commit(false); err != nil {
				return err
			}
			b = eng.NewWriteBatch()
		}
		return nil
	}
	var (
		info  raftnode.BackupInfo
		einfo etcdbackup.Info
	)
	if etcd {
		einfo, err = etcdbackup.Read(cfg.SnapshotPath, put)
		// A cairn backup carries its applied index; etcd's consistent
		// index takes its place (at least 1: the log starts after it).
		info.Index = max(einfo.ConsistentIndex, 1)
		b.SetAppliedIndex(info.Index)
		err = etcdCorrupt(err)
	} else {
		info, err = raftnode.ReadBackup(cfg.SnapshotPath, membership.LocalKeys(), put)
	}
	if err != nil {
		b.Discard()
		return SnapshotInfo{}, fmt.Errorf("server: restore %s: %w", cfg.SnapshotPath, err)
	}
	st.Finish()
	// The last batch makes the directory a member: the new membership, and
	// a log that starts after the backup's applied index (which the data
	// kept), committed with sync so the whole restore is durable.
	cs := &raftpb.ConfState{}
	for _, m := range res.Members {
		cs.Voters = append(cs.Voters, m.ID)
	}
	errs := []error{
		membership.StageClusterID(b, res.ClusterID),
		membership.StageLocalID(b, res.MemberID),
		membership.StageSeed(b, membership.Seed{Members: res.Members}),
	}
	// The log (written and synced here) before the state that names it,
	// as BindLog writes them.
	errs = append(errs, raftnode.StageRestoredFileLog(b, files, info.Index, restoredTerm, cs))
	for _, m := range res.Members {
		errs = append(errs, membership.StageMember(b, m))
	}
	if err := errors.Join(errs...); err != nil {
		b.Discard()
		return SnapshotInfo{}, fmt.Errorf("server: restore: %w", err)
	}
	if err := b.Commit(true); err != nil {
		return SnapshotInfo{}, fmt.Errorf("server: restore: %w", err)
	}
	if err := eng.Sync(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("server: restore: %w", err)
	}
	if etcd {
		return etcdSnapshotInfo(einfo), nil
	}
	return snapshotInfo(info, st), nil
}
