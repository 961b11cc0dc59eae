package etcdbackup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/auth"
	"github.com/cairn-db/cairn/internal/lease"
	"github.com/cairn-db/cairn/internal/mvcc"
)

// lockTimeout bounds the wait for the file's lock: an etcd member holds
// its member/snap/db locked while it runs.
const lockTimeout = 10 * time.Second

// Info describes an etcd backup file.
type Info struct {
	// Hash is the CRC-32 (Castagnoli) of the database's buckets, keys and
	// values, computed as `etcdutl snapshot status` computes it.
	Hash uint32
	// Revision is the store's revision; CompactRevision the last
	// finished compaction (-1: none).
	Revision, CompactRevision int64
	// TotalKeys counts the live keys at Revision, as etcdutl does;
	// Versions the stored versions (every revision kept, deletions
	// included).
	TotalKeys, Versions int64
	// Leases counts the leases.
	Leases int64
	// DBSize is the bbolt database's size, as etcdutl reports it;
	// FileSize the file's size, with its digest if any.
	DBSize, FileSize int64
	// HasDigest tells whether the file ends with etcd's sha256 digest (a
	// saved snapshot does, a member's member/snap/db does not).
	HasDigest bool
	// ConsistentIndex and Term are the raft index and term the state was
	// at in its cluster.
	ConsistentIndex, Term uint64
	// StorageVersion is the schema version the file records ("" before
	// etcd 3.6).
	StorageVersion string
	// AuthEnabled tells whether the cluster had auth enabled, and
	// AuthRevision is its auth revision (0: etcd's auth never changed).
	AuthEnabled  bool
	AuthRevision uint64
	// Users and Roles count the auth users and roles, which a restore
	// carries over.
	Users, Roles int64
}

// Status checks the etcd backup at path (see Read) and describes it.
func Status(path string) (Info, error) { return Read(path, nil) }

// Read checks the etcd backup at path, then hands put (if not nil) the
// records of cairn's state that hold its keyspace and leases: every
// version of every key with its revisions, version and lease, the event
// log from the compaction revision on, the revision and compaction
// revision, the leases with their TTLs and the attachments of keys to
// leases, and the auth state (enabled flag, auth revision, users with
// their password hashes, roles with their permissions). Records come in
// no particular order; put must not keep k or v.
//
// The checks come first, before put is called: the file's sha256 digest
// (when it ends with one), then bbolt's own consistency check of every
// page. A file that fails them, or whose content does not decode, gives
// an error wrapping ErrCorrupt. An error from put is returned as is.
func Read(path string, put func(k, v []byte) error) (info Info, err error) {
	f, err := os.Open(path)
	if err != nil {
		return info, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return info, err
	}
	info.FileSize = fi.Size()
	info.HasDigest = hasDigest(info.FileSize)
	dbSize := info.FileSize
	if info.HasDigest {
		dbSize -= digestLen
		err = checkDigest(f, dbSize)
	}
	f.Close()
	if err != nil {
		return info, fmt.Errorf("%s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return info, fmt.Errorf("etcdbackup: %s is locked by a running process (an etcd member?): %w", path, err)
		}
		return info, fmt.Errorf("%w: %s is not a readable etcd database: %w", ErrCorrupt, path, err)
	}
	defer db.Close()
	defer func() {
		// bbolt trusts its pages; a damaged one the check let through can
		// make it panic.
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: reading the database failed: %v", ErrCorrupt, path, r)
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Size() > dbSize {
			return fmt.Errorf("%w: %s is truncated: the database needs %d bytes, the file holds %d", ErrCorrupt, path, tx.Size(), dbSize)
		}
		var problems []string
		for e := range tx.Check() {
			if len(problems) < 5 {
				problems = append(problems, e.Error())
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("%w: %s fails bbolt's consistency check: %v", ErrCorrupt, path, problems)
		}
		info.DBSize = tx.Size()
		r := &reader{tx: tx, info: &info, put: put}
		return r.read()
	})
	if pe := (putError{}); errors.As(err, &pe) {
		return info, pe.err
	}
	return info, err
}

// checkDigest compares the sha256 of the first n bytes of f with the
// digest that follows them.
func checkDigest(f *os.File, n int64) error {
	var want [digestLen]byte
	if _, err := f.ReadAt(want[:], n); err != nil {
		return fmt.Errorf("etcdbackup: read digest: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return fmt.Errorf("etcdbackup: read: %w", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		return fmt.Errorf("%w: it fails its integrity check: sha256 of the content is %x, the file records %x", ErrCorrupt, got, want)
	}
	return nil
}

type reader struct {
	tx   *bolt.Tx
	info *Info
	put  func(k, v []byte) error

	finished, scheduled int64
	leases              map[int64]struct{}
	keyLease            map[string]int64 // live keys whose newest version has a lease
}

// putError marks an error of the caller's put, which Read returns as is.
type putError struct{ err error }

func (e putError) Error() string { return e.err.Error() }

func (r *reader) emit(k, v []byte) error {
	if r.put == nil {
		return nil
	}
	if err := r.put(k, v); err != nil {
		return putError{err}
	}
	return nil
}

func (r *reader) read() error {
	if err := r.readMeta(); err != nil {
		return err
	}
	if err := r.readAuth(); err != nil {
		return err
	}
	if err := r.readLeases(); err != nil {
		return err
	}
	if err := r.hashAndReadKeys(); err != nil {
		return err
	}
	for key, id := range r.keyLease {
		if _, ok := r.leases[id]; !ok {
			continue // etcd too leaves a key whose lease is gone unattached
		}
		if err := lease.AttachRecords(id, []byte(key), r.emit); err != nil {
			return err
		}
	}
	return mvcc.MetaRecords(mvcc.Meta{Rev: r.info.Revision, CompactScheduled: r.scheduled, CompactFinished: r.finished}, r.emit)
}

func (r *reader) readMeta() error {
	r.finished, r.scheduled = -1, -1
	r.info.CompactRevision = -1
	m := r.tx.Bucket(bucketMeta)
	if m == nil {
		return fmt.Errorf("%w: it has no %q bucket: not an etcd database", ErrCorrupt, bucketMeta)
	}
	if r.tx.Bucket(bucketKey) == nil {
		return fmt.Errorf("%w: it has no %q bucket: not an etcd database", ErrCorrupt, bucketKey)
	}
	u64 := func(name []byte) (uint64, error) {
		v := m.Get(name)
		if v == nil {
			return 0, nil
		}
		if len(v) != 8 {
			return 0, fmt.Errorf("%w: meta %s is %d bytes", ErrCorrupt, name, len(v))
		}
		return binary.BigEndian.Uint64(v), nil
	}
	var err error
	if r.info.ConsistentIndex, err = u64(metaConsistentIndex); err != nil {
		return err
	}
	if r.info.Term, err = u64(metaTerm); err != nil {
		return err
	}
	r.info.StorageVersion = string(m.Get(metaStorageVersion))
	for _, c := range []struct {
		name []byte
		dst  *int64
	}{{metaFinishedCompact, &r.finished}, {metaScheduledCompact, &r.scheduled}} {
		if v := m.Get(c.name); v != nil {
			main, _, _, err := parseRevKey(v)
			if err != nil {
				return fmt.Errorf("meta %s: %w", c.name, err)
			}
			*c.dst = main
		}
	}
	if r.finished > 0 {
		r.info.CompactRevision = r.finished
	}
	r.info.Revision = max(1, r.finished, r.scheduled)
	return nil
}

// readAuth reads the auth buckets and hands their state out as cairn's
// auth records: the enabled flag, the revision, and every user (with its
// bcrypt hash as it is) and role.
func (r *reader) readAuth() error {
	var st auth.State
	if a := r.tx.Bucket(bucketAuth); a != nil {
		if v := a.Get(authEnabled); v != nil {
			if len(v) != 1 || v[0] > 1 {
				return fmt.Errorf("%w: auth %s is %x", ErrCorrupt, authEnabled, v)
			}
			st.Enabled = v[0] == 1
		}
		if v := a.Get(authRevision); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%w: auth %s is %d bytes", ErrCorrupt, authRevision, len(v))
			}
			st.Revision = binary.BigEndian.Uint64(v)
		}
	}
	if b := r.tx.Bucket(bucketAuthUsers); b != nil {
		err := b.ForEach(func(k, v []byte) error {
			u := &authpb.User{}
			if err := proto.Unmarshal(v, u); err != nil {
				return fmt.Errorf("%w: user %q: %w", ErrCorrupt, k, err)
			}
			if !bytes.Equal(k, u.Name) {
				return fmt.Errorf("%w: user key %q holds user %q", ErrCorrupt, k, u.Name)
			}
			st.Users = append(st.Users, u)
			return nil
		})
		if err != nil {
			return err
		}
	}
	if b := r.tx.Bucket(bucketAuthRoles); b != nil {
		err := b.ForEach(func(k, v []byte) error {
			ro := &authpb.Role{}
			if err := proto.Unmarshal(v, ro); err != nil {
				return fmt.Errorf("%w: role %q: %w", ErrCorrupt, k, err)
			}
			if !bytes.Equal(k, ro.Name) {
				return fmt.Errorf("%w: role key %q holds role %q", ErrCorrupt, k, ro.Name)
			}
			st.Roles = append(st.Roles, ro)
			return nil
		})
		if err != nil {
			return err
		}
	}
	r.info.AuthEnabled = st.Enabled
	r.info.AuthRevision = st.Revision
	r.info.Users, r.info.Roles = int64(len(st.Users)), int64(len(st.Roles))
	if r.put == nil {
		return nil
	}
	if err := st.Put(authWriter{r}); err != nil {
		if pe := (putError{}); errors.As(err, &pe) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
}

// authWriter hands auth.State's records to the reader's put.
type authWriter struct{ r *reader }

func (w authWriter) Put(k, v []byte) error { return w.r.emit(k, v) }

func (w authWriter) Delete([]byte) error {
	return errors.New("etcdbackup: a restore deletes nothing")
}

func (r *reader) readLeases() error {
	r.leases = map[int64]struct{}{}
	b := r.tx.Bucket(bucketLease)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		var l leasepb.Lease
		if err := proto.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("%w: lease %x: %w", ErrCorrupt, k, err)
		}
		if len(k) != 8 || int64(binary.BigEndian.Uint64(k)) != l.ID || l.ID == 0 {
			return fmt.Errorf("%w: lease key %x holds lease %x", ErrCorrupt, k, l.ID)
		}
		r.leases[l.ID] = struct{}{}
		r.info.Leases++
		return lease.RecordRecords(lease.Record{ID: l.ID, TTL: l.TTL, Remaining: l.RemainingTTL}, r.emit)
	})
}

// hashAndReadKeys hashes every bucket as etcdutl's status does and, on
// the way, reads the key bucket.
func (r *reader) hashAndReadKeys() error {
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	live := map[string]struct{}{}
	r.keyLease = map[string]int64{}
	c := r.tx.Cursor()
	for name, _ := c.First(); name != nil; name, _ = c.Next() {
		b := r.tx.Bucket(name)
		if b == nil {
			return fmt.Errorf("%w: top-level key %q is not a bucket", ErrCorrupt, name)
		}
		h.Write(name)
		isKey := bytes.Equal(name, bucketKey)
		err := b.ForEach(func(k, v []byte) error {
			h.Write(k)
			h.Write(v)
			if isKey {
				return r.version(k, v, live)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	r.info.Hash = h.Sum32()
	r.info.TotalKeys = int64(len(live))
	return nil
}

// version reads one entry of the key bucket. The bucket is in revision
// order.
func (r *reader) version(k, v []byte, live map[string]struct{}) error {
	main, sub, tombstone, err := parseRevKey(k)
	if err != nil {
		return err
	}
	if len(v) == 0 && !tombstone {
		// `etcdutl snapshot restore --bump-revision` marks the bumped
		// revision so: no key, only a revision the store has reached.
		r.info.Revision = max(r.info.Revision, main)
		return nil
	}
	var kv mvccpb.KeyValue
	if err := proto.Unmarshal(v, &kv); err != nil {
		return fmt.Errorf("%w: version %d_%d: %w", ErrCorrupt, main, sub, err)
	}
	if len(kv.Key) == 0 || !tombstone && kv.ModRevision != main {
		return fmt.Errorf("%w: version %d_%d holds key %q at mod revision %d", ErrCorrupt, main, sub, kv.Key, kv.ModRevision)
	}
	r.info.Versions++
	r.info.Revision = max(r.info.Revision, main)
	if tombstone {
		delete(live, string(kv.Key))
		delete(r.keyLease, string(kv.Key))
	} else {
		live[string(kv.Key)] = struct{}{}
		if kv.Lease != 0 {
			r.keyLease[string(kv.Key)] = kv.Lease
		} else {
			delete(r.keyLease, string(kv.Key))
		}
	}
	err = mvcc.VersionRecords(&mvcc.KeyVersion{
		Key: kv.Key, Main: main, Sub: sub, Tombstone: tombstone,
		Create: kv.CreateRevision, Version: kv.Version, Lease: kv.Lease, Value: kv.Value,
	}, r.finished <= 0 || main >= r.finished, r.emit)
	if pe := (putError{}); err != nil && !errors.As(err, &pe) {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return err
}
