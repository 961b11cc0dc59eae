package mvcc

import (
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairn-db/cairn/internal/storage"
)

// Errors returned by the store. Their text is etcd's, so clients that match
// errors by message see the same thing.
var (
	// ErrCompacted is returned for a read or compaction at a revision that
	// has already been compacted away.
	ErrCompacted = errors.New("mvcc: required revision has been compacted")
	// ErrFutureRev is returned for a read or compaction at a revision above
	// the store's current revision.
	ErrFutureRev = errors.New("mvcc: required revision is a future revision")
	// ErrKeyNotFound is returned by a Put with ignore_value or ignore_lease
	// on a key that does not exist.
	ErrKeyNotFound = errors.New("etcdserver: key not found")
	// ErrLeaseNotFound is returned by a Put that attaches a lease that does
	// not exist.
	ErrLeaseNotFound = errors.New("lease not found")
)

// Options tune a Store.
type Options struct {
	// LeaseExists reports whether a lease is granted. Nil means no lease
	// exists, so every Put with a lease fails with ErrLeaseNotFound.
	LeaseExists func(id int64) bool
}

// Store is the revisioned key-value state machine.
type Store struct {
	eng  *storage.Engine
	opts Options
}

// Open loads the store kept in eng.
func Open(eng *storage.Engine, opts Options) (*Store, error) {
	return &Store{eng: eng, opts: opts}, nil
}

// Range reads keys.
func (s *Store) Range(req *pb.RangeRequest) (*pb.RangeResponse, error) {
	return nil, errors.New("mvcc: not implemented yet")
}

// Rev returns the current revision.
func (s *Store) Rev() int64 { return 1 }

// CompactRev returns the compaction revision.
func (s *Store) CompactRev() int64 { return 0 }

// HashKV hashes the key-value history.
func (s *Store) HashKV(rev int64) (hash uint32, compactRev int64, hashRev int64, err error) {
	return 0, 0, 0, errors.New("mvcc: not implemented yet")
}

// Close stops background work.
func (s *Store) Close() error { return nil }

// Write starts a group of write requests in b.
func (s *Store) Write(b *storage.Batch) *Write { return &Write{s: s, b: b} }

// Write is a group of write requests sharing a batch.
type Write struct {
	s *Store
	b *storage.Batch
}

// Put writes a key.
func (w *Write) Put(req *pb.PutRequest) (*pb.PutResponse, error) {
	return nil, errors.New("mvcc: not implemented yet")
}

// DeleteRange deletes keys.
func (w *Write) DeleteRange(req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	return nil, errors.New("mvcc: not implemented yet")
}

// Txn runs a transaction.
func (w *Write) Txn(req *pb.TxnRequest) (*pb.TxnResponse, error) {
	return nil, errors.New("mvcc: not implemented yet")
}

// Compact compacts.
func (w *Write) Compact(req *pb.CompactionRequest) (*pb.CompactionResponse, <-chan struct{}, error) {
	return nil, nil, errors.New("mvcc: not implemented yet")
}

// Done publishes.
func (w *Write) Done() {}

// Events returns the events.
func (w *Write) Events() []*mvccpb.Event { return nil }
