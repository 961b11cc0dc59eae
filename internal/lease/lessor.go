package lease

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairn-db/cairn/internal/clock"
	"github.com/cairn-db/cairn/internal/storage"
)

// MaxTTL is the largest TTL, in seconds, a lease may be granted with
// (etcd's limit).
const MaxTTL = 9_000_000_000

// Errors. Where etcd has the same error the text is etcd's.
var (
	// ErrLeaseNotFound is returned for a lease that does not exist (and by
	// Grant for lease ID 0, which names no lease).
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrLeaseExists is returned by Grant for an ID already granted.
	ErrLeaseExists = errors.New("lease already exists")
	// ErrLeaseTTLTooLarge is returned by Grant for a TTL above MaxTTL.
	ErrLeaseTTLTooLarge = errors.New("too large lease TTL")
	// ErrNotPrimary is returned by the leader-side calls (Renew,
	// TimeToLive) on a member whose lessor is not promoted: only the
	// leader keeps leases' clocks.
	ErrNotPrimary = errors.New("not a primary lessor")
)

// Defaults, etcd's.
const (
	// DefaultCheckpointInterval is how often the leader persists a long
	// lease's remaining TTL.
	DefaultCheckpointInterval = 5 * time.Minute
	// DefaultRevokeRate is how many expired leases per second the leader
	// revokes at most.
	DefaultRevokeRate = 1000
	// DefaultCheckpointRate is how many checkpoints per second the leader
	// proposes at most.
	DefaultCheckpointRate = 1000
	// DefaultExpiredRetry is how long after reporting an expired lease
	// Expired reports it again if it is still there (its revoke failed).
	DefaultExpiredRetry = 3 * time.Second
	// TickInterval is how often Run looks for expired leases and due
	// checkpoints.
	TickInterval = 500 * time.Millisecond
)

// forever is the deadline of a lease whose clock is not running (on a
// member that is not the leader).
const forever = math.MaxInt64

// MinTTL returns etcd's minimum lease TTL, in whole seconds, for a raft
// heartbeat (tick) interval and election timeout in ticks: a lease must
// outlive a leader election, so no TTL below 1.5 election timeouts is
// granted. etcd's defaults (100 ms, 10 ticks) give 2.
func MinTTL(heartbeat time.Duration, electionTicks int) int64 {
	d := time.Duration((3*electionTicks)/2) * heartbeat
	return int64(math.Ceil(d.Seconds()))
}

// Options tune a Lessor. A zero field means its default.
type Options struct {
	// MinTTL is the smallest TTL granted, in seconds; shorter requests get
	// it instead. Default MinTTL(100ms, 10).
	MinTTL int64
	// CheckpointInterval is how often the leader persists the remaining
	// TTL of a lease whose TTL is longer than it (default 5 minutes);
	// negative turns checkpoints off.
	CheckpointInterval time.Duration
	// RevokeRate bounds expired leases reported per second (default 1000).
	RevokeRate int
	// CheckpointRate bounds checkpoints reported per second (default 1000).
	CheckpointRate int
	// ExpiredRetry is when Expired reports a lease again whose revoke has
	// not happened (default 3 s; etcd uses the request timeout).
	ExpiredRetry time.Duration
	// Clock is the source of time (Now and After; the lessor makes no
	// tickers). It defaults to the wall clock; tests pass a fake one
	// that moves only when told.
	Clock clock.Clock
}

func (o Options) withDefaults() Options {
	if o.MinTTL == 0 {
		o.MinTTL = MinTTL(100*time.Millisecond, 10)
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.RevokeRate <= 0 {
		o.RevokeRate = DefaultRevokeRate
	}
	if o.CheckpointRate <= 0 {
		o.CheckpointRate = DefaultCheckpointRate
	}
	if o.ExpiredRetry <= 0 {
		o.ExpiredRetry = DefaultExpiredRetry
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	return o
}

// lease is one granted lease. Times are nanoseconds since the lessor's
// epoch; the attached keys live only in storage.
type lease struct {
	id        int64
	ttl       int64 // granted TTL, seconds
	remaining int64 // checkpointed remaining TTL, seconds; 0 for none
	// deadline is when the lease expires: forever unless this member is
	// the primary (leader).
	deadline int64
	due      int64 // expiry heap key: deadline, or the retry time once reported
	cpAt     int64 // checkpoint heap key
	expIdx   int32 // position in the expiry heap, -1 if not in it
	cpIdx    int32 // position in the checkpoint heap, -1 if not in it
	// revoked is made when a Renew waits for the expired lease to go, and
	// closed by Revoke.
	revoked chan struct{}
}

// clockTTL is what the lease's clock restarts from: the checkpointed
// remaining TTL if there is one, else the full TTL.
func (le *lease) clockTTL() int64 {
	if le.remaining > 0 {
		return le.remaining
	}
	return le.ttl
}

// Lessor is the lease state machine. See the package doc for who calls
// what from which goroutine; all methods are safe for concurrent use, but
// the apply-side ones must be called in log order by one goroutine, as they
// change the replicated state.
type Lessor struct {
	eng   *storage.Engine
	opts  Options
	clock clock.Clock
	epoch time.Time

	mu struct {
		sync.Mutex
		leases map[int64]*lease
		// peak is the most leases the map has held since it was made: Go
		// maps never shrink, so the map is rebuilt when it falls well
		// below its peak.
		peak    int
		primary bool
		// demoted is closed by Demote; nil while not primary.
		demoted     chan struct{}
		expiry      leaseHeap // primary only: every lease
		checkpoints leaseHeap // primary only: leases whose TTL exceeds the checkpoint interval
	}
}

// Open loads the leases kept in eng. The lessor starts as a follower:
// every lease's clock is stopped until Promote.
func Open(eng *storage.Engine, opts Options) (*Lessor, error) {
	opts = opts.withDefaults()
	l := &Lessor{eng: eng, opts: opts, clock: opts.Clock}
	l.epoch = l.clock.Now()
	l.mu.checkpoints.checkpoint = true
	if err := l.Reload(); err != nil {
		return nil, err
	}
	return l, nil
}

// Reload replaces the in-memory leases with those in the engine, after
// the engine's contents were replaced wholesale (a snapshot was
// ingested). On the primary each lease's clock restarts from its
// checkpointed remaining TTL, or its full TTL.
func (l *Lessor) Reload() error {
	leases := make(map[int64]*lease)
	lower := []byte{storage.PrefixLease, kindRecord}
	it, err := l.eng.DB().NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return fmt.Errorf("lease: load: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		id, err := decodeRecordKey(it.Key())
		if err != nil {
			it.Close()
			return err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("lease: load %x: %w", id, err)
		}
		ttl, remaining, err := decodeRecord(v)
		if err != nil {
			it.Close()
			return err
		}
		// As etcd: a lease granted under a smaller minimum gets the
		// current one.
		ttl = max(ttl, l.opts.MinTTL)
		leases[id] = &lease{id: id, ttl: ttl, remaining: remaining, deadline: forever, expIdx: -1, cpIdx: -1}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("lease: load: %w", err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.expiry.clear()
	l.mu.checkpoints.clear()
	l.mu.leases, l.mu.peak = leases, len(leases)
	if l.mu.primary {
		now := l.now()
		for _, le := range leases {
			l.startClockLocked(le, now, 0)
		}
	}
	return nil
}

// now is the lessor's time: nanoseconds since its epoch.
func (l *Lessor) now() int64 { return int64(l.clock.Now().Sub(l.epoch)) }

// addSat adds, saturating short of forever (which means a stopped clock,
// not a far deadline).
func addSat(a, b int64) int64 {
	if b > 0 && a >= forever-1-b {
		return forever - 1
	}
	return a + b
}

func seconds(s int64) int64 {
	if s > (forever-1)/int64(time.Second) {
		return forever - 1
	}
	return s * int64(time.Second)
}

// startClockLocked sets le to expire extend after its clock TTL from now,
// and schedules its next checkpoint.
func (l *Lessor) startClockLocked(le *lease, now int64, extend time.Duration) {
	le.deadline = addSat(addSat(now, int64(extend)), seconds(le.clockTTL()))
	le.due = le.deadline
	l.mu.expiry.set(le)
	l.scheduleCheckpointLocked(le, now)
}

// scheduleCheckpointLocked arms le's next checkpoint if its TTL is long
// enough for one to matter.
func (l *Lessor) scheduleCheckpointLocked(le *lease, now int64) {
	iv := l.opts.CheckpointInterval
	if iv <= 0 || le.ttl <= int64(iv/time.Second) {
		return
	}
	le.cpAt = addSat(now, int64(iv))
	l.mu.checkpoints.set(le)
}

// forgetLocked drops le from memory, freeing what it held.
func (l *Lessor) forgetLocked(le *lease) {
	delete(l.mu.leases, le.id)
	l.mu.expiry.remove(le)
	l.mu.checkpoints.remove(le)
	if le.revoked != nil {
		close(le.revoked)
		le.revoked = nil
	}
	if n := len(l.mu.leases); l.mu.peak > 1024 && n < l.mu.peak/4 {
		m := make(map[int64]*lease, n)
		for id, x := range l.mu.leases {
			m[id] = x
		}
		l.mu.leases, l.mu.peak = m, n
	}
}

// Len returns the number of granted leases.
func (l *Lessor) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.leases)
}
