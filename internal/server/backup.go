package server

import (
	"context"
	"io"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/etcdbackup"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/raftnode"
)

// SnapshotStream is a backup of the member's replicated state at one
// moment in etcd's format (package etcdbackup describes it): a bbolt
// database built in a temporary, already unlinked file in the data
// directory, streamed with its sha256 digest appended. Memory stays
// bounded whatever the size of the database. It is not safe for
// concurrent use; the caller must Close it.
type SnapshotStream struct {
	// Header describes the state the backup holds: its Revision is the
	// store's revision at that moment.
	Header *pb.ResponseHeader
	// Size is the exact number of bytes the stream yields, its final
	// sha256 digest included.
	Size int64
	// Index is the raft applied index the state was taken at.
	Index uint64

	s     *Server
	rc    io.ReadCloser
	start time.Time // for etcd_disk_backend_snapshot_duration_seconds
	once  sync.Once
}

// Snapshot starts a backup of this member's replicated state as it is
// now, in etcd's file format, so that etcdutl reads it: the mvcc keyspace
// (every revision since the last compaction), the revision and
// compaction revision, the leases, and the auth state (enabled flag,
// revision, users with their password hashes, roles); the member list
// and alarms are left out, as
// etcdutl's restore replaces them. Writes that continue while the stream
// is read are not in it. Errors: ErrStopped; once the member starts
// stopping, Read fails with ErrStopped.
func (s *Server) Snapshot(ctx context.Context) (*SnapshotStream, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	view, rev, err := s.stateView()
	if err != nil {
		return nil, err
	}
	// The file is built from the view, which can then go, and streamed
	// from disk: a long download pins no Pebble snapshot.
	bk, err := etcdbackup.Create(ctx, s.cfg.DataDir, view, view.Index, view.Term)
	view.Close()
	if err != nil {
		return nil, err
	}
	rc, size := io.ReadCloser(bk), bk.Size()
	// Shutdown waits for s.life.wg, so a member stops once its streams end; a
	// Read after stopping began fails, so a stream whose caller goes on
	// reading ends.
	s.life.wg.Add(1)
	s.lg.Info("sending a snapshot to a client", "revision", rev, "applied-index", view.Index, "bytes", size)
	return &SnapshotStream{
		Header: s.fillHeader(&pb.ResponseHeader{Revision: rev}),
		Size:   size,
		Index:  view.Index,
		s:      s,
		rc:     rc,
		start:  time.Now(),
	}, nil
}

// Read reads the next bytes of the backup.
func (st *SnapshotStream) Read(p []byte) (int, error) {
	if st.s.life.stopping() {
		st.Close()
		return 0, ErrStopped
	}
	return st.rc.Read(p)
}

// Close releases the stream's Pebble snapshot. It is idempotent.
func (st *SnapshotStream) Close() error {
	var err error
	st.once.Do(func() {
		err = st.rc.Close()
		st.s.metrics.snapshot.Observe(time.Since(st.start).Seconds())
		st.s.life.wg.Done()
	})
	return err
}

// Hash returns a CRC-32 (Castagnoli) of this member's whole replicated
// state (the mvcc keyspace with its history, leases, the member list and
// alarms) at the current revision, which the header carries, for the
// Maintenance service's Hash. Unlike etcd's, which hashes its bbolt file,
// it is comparable between cairn members only: members that applied the
// same entries give the same hash (the applied index itself is left out of
// it), and it is the hash `cairn snapshot status` prints for a backup
// taken at that moment. Errors: ErrStopped.
func (s *Server) Hash(ctx context.Context) (*pb.HashResponse, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	view, rev, err := s.stateView()
	if err != nil {
		return nil, err
	}
	defer view.Close()
	h, err := view.Hash()
	if err != nil {
		return nil, err
	}
	return &pb.HashResponse{Header: s.fillHeader(&pb.ResponseHeader{Revision: rev}), Hash: h}, nil
}

// stateView pins the member's replicated state as it is now (a snapshot a
// restore cannot be halfway through) and reads the store's revision in
// it. The caller closes the view.
func (s *Server) stateView() (*raftnode.StateSnapshot, int64, error) {
	s.restoring.RLock()
	view, err := s.node.SnapshotState()
	s.restoring.RUnlock()
	if err != nil {
		return nil, 0, err
	}
	rev, err := mvcc.RevisionIn(view.Get)
	if err != nil {
		view.Close()
		return nil, 0, err
	}
	return view, rev, nil
}
