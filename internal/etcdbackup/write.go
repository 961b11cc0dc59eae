package etcdbackup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/lease"
	"github.com/cairn-db/cairn/internal/mvcc"
	"github.com/cairn-db/cairn/internal/trailer"
)

// State is a consistent, point-in-time view of a member's replicated
// state, which Create reads.
type State interface {
	// Scan calls fn for every record whose key lies in [lo, hi), in key
	// order; fn must not keep k or v.
	Scan(lo, hi []byte, fn func(k, v []byte) error) error
	// Get returns the value of one record, or storage.ErrNotFound.
	Get(key []byte) ([]byte, error)
}

// authReader reads the auth keyspace of a State for auth.ReadState.
type authReader struct{ st State }

func (r authReader) Scan(prefix []byte, fn func(k, v []byte) error) error {
	lo, hi := auth.KeyRange()
	if !bytes.HasPrefix(prefix, lo) {
		return fmt.Errorf("etcdbackup: auth scan of %q outside its keyspace", prefix)
	}
	return r.st.Scan(prefix, hi, func(k, v []byte) error {
		if !bytes.HasPrefix(k, prefix) {
			return nil
		}
		return fn(k, v)
	})
}

// tempPattern names the directories Create builds in.
const tempPattern = ".etcd-backup-*"

var createMu sync.Mutex

// putsPerTx bounds the writes of one bbolt transaction while a file is
// built: a transaction holds every page it dirties in memory until it
// commits.
const putsPerTx = 4096

// Backup is an etcd backup file being streamed: the bbolt database, then
// the sha256 digest of it. It reads a temporary file that is already
// unlinked, so nothing is left on disk once it is closed (or the process
// ends). It is not safe for concurrent use.
type Backup struct {
	f    *os.File
	r    io.Reader // the file, then its digest
	size int64
}

// Create writes st as an etcd backend database (a bbolt file with etcd's
// buckets, see the package doc) to a temporary file in dir, and returns it
// ready to stream with etcd's sha256 digest appended. Calls are
// serialized; they build in a directory named by tempPattern, which the
// next call removes if a crash left it. index and term are
// the raft applied index and term the state is at; they become the
// file's consistent index and term. st is read only during the call. The
// file lives on disk only while the stream is open: memory stays bounded
// whatever the size of the state. The build stops with ctx's error once
// ctx is done (the client went away).
func Create(ctx context.Context, dir string, st State, index, term uint64) (*Backup, error) {
	// One build at a time: the disk is better spent on one, and any file
	// of the pattern found now is a leftover of a process that died
	// building it.
	createMu.Lock()
	defer createMu.Unlock()
	stale, _ := filepath.Glob(filepath.Join(dir, tempPattern))
	for _, p := range stale {
		os.RemoveAll(p)
	}
	tmpDir, err := os.MkdirTemp(dir, tempPattern)
	if err != nil {
		return nil, fmt.Errorf("etcdbackup: %w", err)
	}
	// An open file outlives its name: the directory goes as soon as the
	// database is open for streaming.
	defer os.RemoveAll(tmpDir)
	path := filepath.Join(tmpDir, "backup.db")
	if err := build(ctx, path, filepath.Join(tmpDir, "sort"), st, index, term); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("etcdbackup: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("etcdbackup: %w", err)
	}
	if fi.Size()%digestAlign != 0 {
		f.Close()
		return nil, fmt.Errorf("etcdbackup: built a database of %d bytes, not a multiple of %d", fi.Size(), digestAlign)
	}
	return &Backup{f: f, r: trailer.WithDigest(f, sha256.New()), size: fi.Size() + digestLen}, nil
}

// Size returns the exact number of bytes the stream yields, the digest
// included.
func (b *Backup) Size() int64 { return b.size }

// Read reads the next bytes of the backup.
func (b *Backup) Read(p []byte) (int, error) { return b.r.Read(p) }

// Close releases the file.
func (b *Backup) Close() error { return b.f.Close() }

// build writes the database at path, sorting in sortDir.
func build(ctx context.Context, path, sortDir string, st State, index, term uint64) error {
	sorter, err := newRevSorter(sortDir)
	if err != nil {
		return err
	}
	defer sorter.close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoGrowSync: true})
	if err != nil {
		return fmt.Errorf("etcdbackup: open %s: %w", path, err)
	}
	w := &writer{ctx: ctx, db: db, sorter: sorter}
	err = w.write(st, index, term)
	if w.tx != nil {
		w.tx.Rollback()
	}
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("etcdbackup: close %s: %w", path, cerr)
	}
	return err
}

// writer puts into a bbolt database in transactions of putsPerTx writes.
type writer struct {
	ctx    context.Context
	db     *bolt.DB
	sorter *revSorter
	tx     *bolt.Tx
	n      int
	buf    []byte
}

func (w *writer) put(bucket, k, v []byte) error {
	if w.tx == nil {
		tx, err := w.db.Begin(true)
		if err != nil {
			return fmt.Errorf("etcdbackup: %w", err)
		}
		w.tx, w.n = tx, 0
	}
	b := w.tx.Bucket(bucket)
	// Entries come in key order: fill pages as etcd's appends do, not
	// half, as bbolt's splits would for random inserts.
	b.FillPercent = 0.9
	if err := b.Put(k, v); err != nil {
		return fmt.Errorf("etcdbackup: put into %s: %w", bucket, err)
	}
	if w.n++; w.n >= putsPerTx {
		return w.commit()
	}
	return nil
}

func (w *writer) commit() error {
	if w.tx == nil {
		return nil
	}
	if err := w.ctx.Err(); err != nil {
		return err
	}
	tx := w.tx
	w.tx = nil
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("etcdbackup: commit: %w", err)
	}
	return nil
}

func (w *writer) write(st State, index, term uint64) error {
	meta, err := mvcc.ReadMeta(st.Get)
	if err != nil {
		return err
	}
	as, err := auth.ReadState(authReader{st})
	if err != nil {
		return fmt.Errorf("etcdbackup: read auth state: %w", err)
	}
	enabled := []byte{0}
	if as.Enabled {
		enabled = []byte{1}
	}
	err = w.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		u64 := func(x uint64) []byte { return binary.BigEndian.AppendUint64(nil, x) }
		puts := []struct {
			b    *bolt.Bucket
			k, v []byte
		}{
			{m, metaConsistentIndex, u64(index)},
			{m, metaTerm, u64(term)},
			{m, metaStorageVersion, []byte(storageVersion)},
			{tx.Bucket(bucketAuth), authEnabled, enabled},
			{tx.Bucket(bucketAuth), authRevision, u64(as.Revision)},
		}
		for _, u := range as.Users {
			v, err := proto.MarshalOptions{Deterministic: true}.Marshal(u)
			if err != nil {
				return fmt.Errorf("encode user %q: %w", u.Name, err)
			}
			puts = append(puts, struct {
				b    *bolt.Bucket
				k, v []byte
			}{tx.Bucket(bucketAuthUsers), u.Name, v})
		}
		for _, r := range as.Roles {
			v, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				return fmt.Errorf("encode role %q: %w", r.Name, err)
			}
			puts = append(puts, struct {
				b    *bolt.Bucket
				k, v []byte
			}{tx.Bucket(bucketAuthRoles), r.Name, v})
		}
		if meta.CompactScheduled > 0 {
			puts = append(puts, struct {
				b    *bolt.Bucket
				k, v []byte
			}{m, metaScheduledCompact, appendRevKey(nil, meta.CompactScheduled, 0, false)})
		}
		if meta.CompactFinished > 0 {
			puts = append(puts, struct {
				b    *bolt.Bucket
				k, v []byte
			}{m, metaFinishedCompact, appendRevKey(nil, meta.CompactFinished, 0, false)})
		}
		for _, p := range puts {
			if err := p.b.Put(p.k, p.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("etcdbackup: write meta: %w", err)
	}

	var kv mvccpb.KeyValue
	var val []byte
	n := 0
	err = mvcc.ScanVersions(st.Scan, func(v *mvcc.KeyVersion) error {
		if n++; n%putsPerTx == 0 {
			if err := w.ctx.Err(); err != nil {
				return err
			}
		}
		if v.Tombstone {
			kv = mvccpb.KeyValue{Key: v.Key}
		} else {
			kv = mvccpb.KeyValue{Key: v.Key, CreateRevision: v.Create, ModRevision: v.Main,
				Version: v.Version, Value: v.Value, Lease: v.Lease}
		}
		var err error
		if val, err = (proto.MarshalOptions{Deterministic: true}).MarshalAppend(val[:0], &kv); err != nil {
			return fmt.Errorf("etcdbackup: encode %q: %w", v.Key, err)
		}
		w.buf = appendRevKey(w.buf[:0], v.Main, v.Sub, v.Tombstone)
		return w.sorter.add(w.buf, val)
	})
	if err != nil {
		return err
	}
	err = w.sorter.each(func(k, v []byte) error {
		return w.put(bucketKey, bytes.Clone(k), bytes.Clone(v))
	})
	if err != nil {
		return err
	}
	err = lease.ScanRecords(st.Scan, func(r lease.Record) error {
		v, err := proto.Marshal(&leasepb.Lease{ID: r.ID, TTL: r.TTL, RemainingTTL: r.Remaining})
		if err != nil {
			return fmt.Errorf("etcdbackup: encode lease %x: %w", r.ID, err)
		}
		return w.put(bucketLease, binary.BigEndian.AppendUint64(nil, uint64(r.ID)), v)
	})
	if err != nil {
		return err
	}
	return errors.Join(w.commit(), w.db.Sync())
}
