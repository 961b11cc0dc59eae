package audit

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Kinds of Event.
const (
	// KindAuthChange is an auth change a member applied.
	KindAuthChange = "auth_change"
	// KindRefused is a request a member refused for an auth reason.
	KindRefused = "refused"
)

// Defaults of Options.
const (
	DefaultMaxBytes = 100 << 20
	DefaultMaxFiles = 5
	DefaultBuffer   = 4096
)

// Event is one line of the audit log. Empty fields are left out.
type Event struct {
	// Time is when it happened; Record sets it when zero.
	Time time.Time
	// Member is the name of the member writing the line.
	Member string
	// Kind is KindAuthChange or KindRefused.
	Kind string
	// Method is the request's name (etcd's RPC name: "Put", "UserAdd",
	// or a full gRPC method name).
	Method string
	// User is who made the request ("" for nobody, or unknown).
	User string
	// Name is the user or role an auth change changed.
	Name string
	// Role is the role granted to or revoked from a user.
	Role string
	// Perm is a permission's type: READ, WRITE or READWRITE.
	Perm string
	// Key and RangeEnd are the key range of the request or permission;
	// for a refusal, the range that lacked a permission.
	Key, RangeEnd []byte
	// Lease is the lease a request named (0: none): the one revoked,
	// kept alive or asked about, or the one a put attaches its key to.
	Lease int64
	// Reason is why a request was refused: etcd's error text.
	Reason string
	// Index is the raft index of the entry of an auth change, and
	// AuthRevision the auth revision after it.
	Index, AuthRevision uint64
}

// line is Event's JSON form.
type line struct {
	Time           string `json:"time"`
	Member         string `json:"member,omitempty"`
	Kind           string `json:"kind"`
	Method         string `json:"method"`
	User           string `json:"user"`
	Name           string `json:"name,omitempty"`
	Role           string `json:"role,omitempty"`
	Perm           string `json:"perm,omitempty"`
	Key            string `json:"key,omitempty"`
	KeyBase64      string `json:"key_base64,omitempty"`
	RangeEnd       string `json:"range_end,omitempty"`
	RangeEndBase64 string `json:"range_end_base64,omitempty"`
	Lease          string `json:"lease,omitempty"`
	Reason         string `json:"reason,omitempty"`
	Index          uint64 `json:"index,omitempty"`
	AuthRevision   uint64 `json:"auth_revision,omitempty"`
}

func bytesField(b []byte) (text, b64 string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return "", base64.StdEncoding.EncodeToString(b)
}

// MarshalJSON encodes e as one line of the log (without the newline).
func (e Event) MarshalJSON() ([]byte, error) {
	l := line{
		Time: e.Time.UTC().Format(time.RFC3339Nano), Member: e.Member, Kind: e.Kind, Method: e.Method,
		User: e.User, Name: e.Name, Role: e.Role, Perm: e.Perm, Reason: e.Reason,
		Index: e.Index, AuthRevision: e.AuthRevision,
	}
	l.Key, l.KeyBase64 = bytesField(e.Key)
	l.RangeEnd, l.RangeEndBase64 = bytesField(e.RangeEnd)
	if e.Lease != 0 {
		// Hexadecimal, as etcdctl prints lease IDs.
		l.Lease = strconv.FormatInt(e.Lease, 16)
	}
	return json.Marshal(l)
}

// Options configure a Log.
type Options struct {
	// Path is the file written (--audit-log).
	Path string
	// MaxBytes is the size past which the file rotates (0:
	// DefaultMaxBytes); MaxFiles the number of rotated files kept (-1:
	// none; 0: DefaultMaxFiles).
	MaxBytes int64
	MaxFiles int
	// Buffer is the number of lines waiting for the writer at most (0:
	// DefaultBuffer).
	Buffer int
	// Registerer, if set, gets the log's counters.
	Registerer prometheus.Registerer
	// Now gives Record's time (time.Now when nil).
	Now func() time.Time
}

// Log is an open audit log. Record is safe for concurrent use.
type Log struct {
	opts Options
	ch   chan []byte
	done chan struct{}

	mu     sync.RWMutex // guards closed against Record sending on a closed ch
	closed bool

	dropped, writeErrors prometheus.Counter

	// Owned by the writer goroutine.
	f    *os.File
	w    *bufio.Writer
	size int64
}

// Open opens (creating or appending to) the log at opts.Path and starts
// its writer.
func Open(opts Options) (*Log, error) {
	l, err := openIdle(opts)
	if err != nil {
		return nil, err
	}
	go l.run()
	return l, nil
}

// openIdle is Open without the writer goroutine.
func openIdle(opts Options) (*Log, error) {
	if opts.Path == "" {
		return nil, errors.New("audit: no path")
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	switch {
	case opts.MaxFiles == 0:
		opts.MaxFiles = DefaultMaxFiles
	case opts.MaxFiles < 0:
		opts.MaxFiles = 0
	}
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Log{
		opts: opts,
		ch:   make(chan []byte, opts.Buffer),
		done: make(chan struct{}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_audit_log_dropped_total",
			Help: "Audit log lines dropped because the writer's buffer was full.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_audit_log_write_errors_total",
			Help: "Audit log lines lost to write errors.",
		}),
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{l.dropped, l.writeErrors} {
			if err := opts.Registerer.Register(c); err != nil {
				l.f.Close()
				return nil, fmt.Errorf("audit: register metrics: %w", err)
			}
		}
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.opts.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	l.f, l.w, l.size = f, bufio.NewWriter(f), fi.Size()
	return nil
}

// Record writes e to the log, or drops it (counted) if the writer is that
// far behind. It never waits for the disk. On a nil or closed Log it does
// nothing.
func (l *Log) Record(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.opts.Now()
	}
	b, err := e.MarshalJSON()
	if err != nil {
		l.writeErrors.Inc()
		return
	}
	b = append(b, '\n')
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return
	}
	select {
	case l.ch <- b:
	default:
		l.dropped.Inc()
	}
}

// Enabled reports whether l records anything (it is not nil).
func (l *Log) Enabled() bool { return l != nil }

// Close writes the lines already recorded, then closes the file. Records
// after Close are ignored.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.closed = true
	close(l.ch)
	l.mu.Unlock()
	<-l.done
	if l.opts.Registerer != nil {
		l.opts.Registerer.Unregister(l.dropped)
		l.opts.Registerer.Unregister(l.writeErrors)
	}
	return l.f.Close()
}

func (l *Log) run() {
	defer close(l.done)
	for b := range l.ch {
		l.write(b)
		if len(l.ch) == 0 {
			if err := l.w.Flush(); err != nil {
				l.writeErrors.Inc()
				l.w.Reset(l.f)
			}
		}
	}
	if err := l.w.Flush(); err != nil {
		l.writeErrors.Inc()
	}
}

func (l *Log) write(b []byte) {
	if l.size > 0 && l.size+int64(len(b)) > l.opts.MaxBytes {
		if err := l.rotate(); err != nil {
			l.writeErrors.Inc()
		}
	}
	if _, err := l.w.Write(b); err != nil {
		l.writeErrors.Inc()
		l.w.Reset(l.f)
		return
	}
	l.size += int64(len(b))
}

// rotate shifts path to path.1 (and path.i to path.i+1), dropping the
// oldest, and opens a new path. If the new file cannot be opened the old
// one is kept.
func (l *Log) rotate() error {
	if err := l.w.Flush(); err != nil {
		return err
	}
	if err := l.f.Close(); err != nil {
		return err
	}
	p := l.opts.Path
	name := func(i int) string { return p + "." + strconv.Itoa(i) }
	if l.opts.MaxFiles == 0 {
		os.Remove(p)
	} else {
		os.Remove(name(l.opts.MaxFiles))
		for i := l.opts.MaxFiles - 1; i >= 1; i-- {
			os.Rename(name(i), name(i+1)) // a missing one is fine
		}
		if err := os.Rename(p, name(1)); err != nil {
			return errors.Join(err, l.open())
		}
	}
	return l.open()
}

// Dropped returns the number of lines dropped so far.
func (l *Log) Dropped() uint64 {
	if l == nil {
		return 0
	}
	return uint64(counterValue(l.dropped))
}
