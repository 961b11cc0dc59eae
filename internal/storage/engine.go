package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Keyspace prefixes; see the package doc for who owns each.
const (
	PrefixMeta       byte = 'm'
	PrefixRaft       byte = 'r'
	PrefixKeys       byte = 'k'
	PrefixEvents     byte = 'e'
	PrefixMVCCMeta   byte = 'x'
	PrefixLease      byte = 'l'
	PrefixAuth       byte = 'a'
	PrefixMembership byte = 'c'
)

// ErrLocked is returned by Open when another process holds the data directory.
var ErrLocked = errors.New("storage: data directory is in use by another process")

// ErrNotFound is returned by Get for a key that does not exist.
var ErrNotFound = errors.New("storage: key not found")

var keyAppliedIndex = []byte("m/applied")

const lockFileName = "cairn.lock"

// Options tune an Engine.
type Options struct {
	// NoSync turns every synced commit into an unsynced one
	// (--unsafe-no-fsync). A crash may then lose acknowledged writes.
	NoSync bool
	// CacheBytes is the size of Pebble's block cache; 0 picks a default.
	CacheBytes int64
	// QuotaBytes is the space the member may use (--quota-backend-bytes);
	// 0 or less means the default, 2 GiB. It sizes the memtables, and with
	// them the write-ahead logs, in proportion (see the package doc's
	// Space), so a small quota is not eaten by preallocated logs.
	QuotaBytes int64
	// FS is the file system the engine keeps its files in; nil means the
	// operating system's. Tests pass an in-memory or error-injecting one
	// (vfs.NewMem, vfs/errorfs).
	FS vfs.FS
	// Logger receives the engine's errors (every failed flush, compaction
	// or write-ahead log write, with its cause), warnings (slow disk, write
	// stalls, low disk space) and Pebble's own messages at debug level;
	// nil discards them.
	Logger *slog.Logger
	// OnBackgroundError, when set, is called with every error of a
	// background job (flush, compaction) and with a fatal write-ahead log
	// error just before the engine panics on it. IsNoSpace tells a full
	// device apart: the owner raises its NOSPACE alarm and stops accepting
	// writes. It runs on one of Pebble's goroutines, possibly holding the
	// engine's locks: it must not block or call back into the engine.
	OnBackgroundError func(error)
}

// Engine is one member's Pebble database. It is safe for concurrent use.
type Engine struct {
	db     *pebble.DB
	dir    string
	fs     vfs.FS // the file system the database is in, as Pebble sees it
	dbDir  string // the database's directory in fs
	noSync bool
	// memTable is the memtable size: a flush writes at most about that.
	memTable uint64
	lock     io.Closer
	ev       *events
	// failed is set by the first write-ahead log failure (see ErrWAL).
	failed atomic.Pointer[fatalError]

	// gen counts the flushes and compactions that finished; see Generation.
	gen     atomic.Uint64
	watchMu sync.Mutex
	watches map[int]func()
	nextID  int
}

// Open opens (creating if needed) the engine in dir. It returns ErrLocked,
// wrapped with the directory, when another process holds dir; ErrNoSpace,
// wrapped with the directory, the cause and the remedy, when the device is
// too full to recover the write-ahead log (Pebble would retry that forever);
// ErrBackground likewise for another I/O error that keeps that recovery
// from finishing. After one of those two, the abandoned recovery's
// goroutines stay parked until the process exits: the caller is expected
// to report the error and exit, not to retry in the same process.
func Open(dir string, opts Options) (*Engine, error) {
	// Pebble makes the entries it creates inside dir durable; dir's own
	// entry in its parent is ours to sync.
	fs := opts.FS
	if fs == nil {
		fs = privateFS{vfs.Default}
	}
	if err := MkdirAllSynced(fs, dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: create data directory: %w", err)
	}
	lock, err := lockDir(fs, opts.FS == nil, dir)
	if err != nil {
		return nil, err
	}
	cache := opts.CacheBytes
	if cache <= 0 {
		cache = 128 << 20
	}
	c := pebble.NewCache(cache)
	defer c.Unref()
	e := &Engine{dir: dir, dbDir: fs.PathJoin(dir, "db"), noSync: opts.NoSync, lock: lock}
	e.ev = newEvents(opts.Logger, dir, opts.OnBackgroundError)
	e.memTable = memTableSize(opts.QuotaBytes)
	popts := &pebble.Options{
		FS:                 fs,
		Cache:              c,
		FormatMajorVersion: pebble.FormatNewest,
		// Each write-ahead log is preallocated to 1.1x the memtable size:
		// see memTableSize and the package doc's Space.
		MemTableSize: e.memTable,
		// Pebble keeps this many + 1 write-ahead logs for reuse, each
		// preallocated in full: 2 (one memtable flushing while the next
		// fills) keeps 3 instead of 5, 70 MiB less disk on an idle member
		// with 32 MiB memtables.
		// Filling a memtable takes seconds at the write rates a member
		// sees and flushing it a fraction of one, so writes do not stall
		// on it.
		MemTableStopWritesThreshold: 2,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
		LBaseMaxBytes:               256 << 20,
		Logger:                      pebbleLogger{e.ev},
		Comparer:                    Comparer,
		EventListener:               e.ev.listener(e.nextGeneration),
	}
	for i := range popts.Levels {
		// A bloom filter per table of the user keys it holds versions of
		// (see Comparer), L0 included: those are the tables a lookup of a
		// recently written key would otherwise search one by one.
		popts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	// Disk-health checks: an operation slower than 5 s is reported
	// (EventListener.DiskSlow).
	popts.WithFSDefaults()
	e.fs = popts.FS
	db, err := openPebble(e.dbDir, popts, e.ev)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	e.db = db
	return e, nil
}

// openPebble runs pebble.Open, which does not return while a flush of the
// recovered write-ahead log keeps failing (it retries at once, forever: on
// a full disk that is a core at 100% and no log). The event listener
// reports such failures during the open (see events.opening), and this
// returns the error instead of waiting.
func openPebble(dir string, popts *pebble.Options, ev *events) (*pebble.DB, error) {
	type result struct {
		db  *pebble.DB
		err error
	}
	done := make(chan result, 1)
	ev.opening.Store(true)
	go func() {
		db, err := pebble.Open(dir, popts)
		done <- result{db, err}
	}()
	select {
	case r := <-done:
		ev.opening.Store(false)
		ev.consec.Store(0)
		return r.db, r.err
	case cause := <-ev.openFailed:
		// The flush goroutine that sent cause is parked for good, so
		// pebble.Open, waiting for that flush, never returns.
		return nil, ev.openError(cause)
	}
}

// Generation returns a number that grows each time a flush or a compaction
// finishes. An iterator holds on to the memtables and tables that were live
// when it was opened, so one opened before the generation last changed may
// be keeping memory and disk space the engine no longer needs: a holder of
// long-lived iterators compares generations to know when to let them go.
func (e *Engine) Generation() uint64 { return e.gen.Load() }

// WatchGeneration registers fn to be called after each change of
// Generation, and returns a function that unregisters it. fn runs on a
// goroutine of its own (never on Pebble's flush or compaction goroutine),
// possibly concurrently with another call of fn.
func (e *Engine) WatchGeneration(fn func()) (cancel func()) {
	e.watchMu.Lock()
	defer e.watchMu.Unlock()
	if e.watches == nil {
		e.watches = make(map[int]func())
	}
	id := e.nextID
	e.nextID++
	e.watches[id] = fn
	return func() {
		e.watchMu.Lock()
		delete(e.watches, id)
		e.watchMu.Unlock()
	}
}

// nextGeneration runs on Pebble's goroutines, which must not block on the
// watchers (they may close iterators, which takes Pebble's own locks).
func (e *Engine) nextGeneration() {
	e.gen.Add(1)
	e.watchMu.Lock()
	for _, fn := range e.watches {
		go fn()
	}
	e.watchMu.Unlock()
}

// lockDir takes the data directory's lock: an flock on the operating
// system's file system (osFS), so that the error tells a lock held by
// another process apart; the file system's own lock otherwise.
func lockDir(fs vfs.FS, osFS bool, dir string) (io.Closer, error) {
	path := fs.PathJoin(dir, lockFileName)
	if !osFS {
		l, err := fs.Lock(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrLocked, dir, err)
		}
		return l, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage: open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("storage: lock %s: %w", dir, err)
	}
	return f, nil
}

// Dir returns the data directory the engine was opened in.
func (e *Engine) Dir() string { return e.dir }

// FS returns the filesystem the data directory lives on (Options.FS), for
// the files a member keeps beside Pebble's.
func (e *Engine) FS() vfs.FS { return e.fs }

// DB returns the underlying Pebble database, for the packages that own a
// keyspace and iterate it themselves.
func (e *Engine) DB() *pebble.DB { return e.db }

// Get returns a copy of the value stored at key, or ErrNotFound.
func (e *Engine) Get(key []byte) ([]byte, error) {
	v, closer, err := e.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, nil
}

// AppliedIndex returns the raft index of the last entry whose effects are in
// the engine, 0 for a new one.
func (e *Engine) AppliedIndex() (uint64, error) {
	v, err := e.Get(keyAppliedIndex)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("storage: applied index is %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Sync makes every write committed so far durable. It fails with ErrWAL
// (wrapped) once the write-ahead log has failed.
func (e *Engine) Sync() (err error) {
	if err := e.failure(); err != nil {
		return err
	}
	if e.noSync {
		return nil
	}
	defer e.recoverFatal(&err)
	return e.db.LogData(nil, pebble.Sync)
}

// Failed returns the write-ahead log failure (wrapping ErrWAL) that
// stopped the engine from taking writes, nil while it takes them.
func (e *Engine) Failed() error { return e.failure() }

// flushMargin is the room Flush leaves on the device beyond twice the
// memtable. On a 4 MiB tmpfs with 2 MiB free, a flush of a few kilobytes
// failed its manifest write with ENOSPC, so the margin is generous.
const flushMargin = 64 << 20

// Flush writes the memtable out to a table and waits for it, so that the
// next Open has no write-ahead log to replay: a member that stops cleanly
// calls it before Close (with the raft log elsewhere, the state engine's
// log is never synced, and replaying 30 MiB of it took a restart 0.8 s on
// the development machine). Close without it loses nothing.
//
// With less room on the device than twice the memtable plus flushMargin,
// Flush does nothing and returns an error wrapping ErrNoSpace: a flush
// that runs out of room fails in one of Pebble's own goroutines, which
// ends the process. After the engine has failed (Failed), it returns that
// failure.
func (e *Engine) Flush() (err error) {
	if err := e.failure(); err != nil {
		return err
	}
	need := 2*e.memTable + flushMargin
	if du, derr := e.fs.GetDiskUsage(e.dir); derr == nil && du.AvailBytes < need {
		return fmt.Errorf("%w: %s: %d bytes available, Flush wants %d: not flushed", ErrNoSpace, e.dir, du.AvailBytes, need)
	}
	defer e.recoverFatal(&err)
	if err := e.db.Flush(); err != nil {
		return fmt.Errorf("storage: flush %s: %w", e.dir, err)
	}
	return nil
}

// Close closes the database and releases the directory lock.
func (e *Engine) Close() error {
	err := e.db.Close()
	if cerr := e.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

// NewBatch returns an indexed batch: reads through it see its own writes.
func (e *Engine) NewBatch() *Batch {
	return &Batch{Batch: e.db.NewIndexedBatch(), e: e}
}

// NewWriteBatch returns a write-only batch, cheaper than NewBatch when the
// writer never reads its own writes back.
func (e *Engine) NewWriteBatch() *Batch {
	return &Batch{Batch: e.db.NewBatch(), e: e}
}

// Batch is a set of writes that commits atomically. It is not safe for
// concurrent use.
type Batch struct {
	*pebble.Batch
	e *Engine
	// iters are the iterators NewTrackedIter opened, closed with the batch;
	// beforeCommit are the BeforeCommit functions, in registration order.
	iters        []*pebble.Iterator
	beforeCommit []func()
}

// NewTrackedIter returns an iterator over the batch's writes and the engine
// (the batch must be indexed: Engine.NewBatch) that the batch closes itself
// when it is committed or discarded; the caller must not close it. A writer
// that reads its own writes through one iterator for the batch's whole life
// refreshes it with SetOptions after writing, which is much cheaper than a
// new iterator per read.
func (b *Batch) NewTrackedIter(o *pebble.IterOptions) (*pebble.Iterator, error) {
	it, err := b.Batch.NewIter(o)
	if err != nil {
		return nil, err
	}
	b.iters = append(b.iters, it)
	return it, nil
}

// BeforeCommit registers fn to run at the start of Commit, before the batch
// is applied: the last chance to add writes that only need to be made once
// per batch however many requests it holds (a counter's final value). fn
// does not run if the batch is discarded.
func (b *Batch) BeforeCommit(fn func()) { b.beforeCommit = append(b.beforeCommit, fn) }

func (b *Batch) closeIters() error {
	var err error
	for _, it := range b.iters {
		if cerr := it.Close(); err == nil {
			err = cerr
		}
	}
	b.iters = nil
	return err
}

// SetAppliedIndex records that the batch carries the effects of every entry
// up to index.
func (b *Batch) SetAppliedIndex(index uint64) {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], index)
	b.Set(keyAppliedIndex, v[:], nil)
}

// Commit applies the batch, syncing the write-ahead log first when sync is
// set (and the engine was not opened with NoSync), and releases it. A
// failed write or sync of the write-ahead log, this commit's or an earlier
// one's, fails it with ErrWAL (wrapped): see ErrWAL.
func (b *Batch) Commit(sync bool) (err error) {
	if err := b.e.failure(); err != nil {
		b.Discard()
		return err
	}
	defer b.e.recoverFatal(&err)
	for _, fn := range b.beforeCommit {
		fn()
	}
	b.beforeCommit = nil
	if err := b.closeIters(); err != nil {
		b.Batch.Close()
		return fmt.Errorf("storage: close batch iterator: %w", err)
	}
	wo := pebble.NoSync
	if sync && !b.e.noSync {
		wo = pebble.Sync
	}
	err = b.Batch.Commit(wo)
	if cerr := b.Batch.Close(); err == nil {
		err = cerr
	}
	return err
}

// Discard releases the batch without applying it.
func (b *Batch) Discard() {
	b.closeIters()
	b.beforeCommit = nil
	b.Batch.Close()
}

// Comparer orders keys bytewise, as Pebble's default does, and tells Pebble
// where the user key of a stored MVCC version ends (Split), so that tables
// carry bloom filters of user keys and a lookup of one key's newest version
// (a prefix seek) skips every table holding no version of it. A version key
// is PrefixKeys, the escaped user key, the terminator 0x00 0x01 and a
// 16-byte revision (see package mvcc); its prefix is everything but the
// revision. An escaped key never holds 0x00 0x01, so finding the terminator
// exactly 16 bytes from the end identifies a version key, and every other
// key (raft log, events, meta, seek bounds) is a prefix of its own.
// Bytewise order then compares prefixes first and revisions second, which
// is what Pebble requires of a Split.
//
// The name is recorded in the data directory: a directory written with
// another comparer does not open.
//
// Pebble requires Compare to agree with comparing Split's prefixes first and
// the suffixes second for every key it compares, the keys it makes up
// itself included. The default comparer's shortened index separators break
// that: cut in the middle of a revision, a separator is no version key, so
// its prefix is all of it, while bytewise it sorts among the versions of
// one user key (Pebble's invariant checks, on in race builds, catch it).
// So the separators and successors are the keys themselves: index blocks
// hold whole keys, slightly larger, and every key Pebble compares is one
// whose order is the same both ways.
var Comparer = func() *pebble.Comparer {
	c := *pebble.DefaultComparer
	c.Name = "cairn.keys.v1"
	c.Split = splitVersion
	c.Separator = func(dst, a, _ []byte) []byte { return append(dst, a...) }
	c.Successor = func(dst, a []byte) []byte { return append(dst, a...) }
	return &c
}()

// versionRevLen is the length of the revision that ends a version key.
const versionRevLen = 16

func splitVersion(k []byte) int {
	n := len(k)
	if n >= 1+2+versionRevLen && k[0] == PrefixKeys && k[n-versionRevLen-2] == 0x00 && k[n-versionRevLen-1] == 0x01 {
		return n - versionRevLen
	}
	return n
}
