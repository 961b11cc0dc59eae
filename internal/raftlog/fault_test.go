package raftlog

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// TestFaults fails a write or a sync of the log (EIO, ENOSPC) at the n-th
// such call, for every n a workload reaches, rolls included. The call that
// meets it returns the error, Failed reports it, every later write returns
// it at once, and the log reopened on the healthy disk has every synced
// append.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kinds []errorfs.OpKind
		errno error
	}{
		{"EIO writing", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}, syscall.EIO},
		{"ENOSPC writing", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}, syscall.ENOSPC},
		{"EIO syncing", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}, syscall.EIO},
		{"ENOSPC creating", []errorfs.OpKind{errorfs.OpCreate}, syscall.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for n := 0; ; n++ {
				if !runFault(t, tc.kinds, tc.errno, n) {
					if n < 3 {
						t.Fatalf("the workload makes only %d such calls", n)
					}
					return
				}
			}
		})
	}
}

// runFault runs the workload with the n-th call of one of kinds failing
// with errno. It reports whether the fault was met.
func runFault(t *testing.T, kinds []errorfs.OpKind, errno error, n int) bool {
	mem := vfs.NewCrashableMem()
	calls := 0
	armed := false
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !armed {
			return nil
		}
		for _, k := range kinds {
			if op.Kind == k {
				calls++
				if calls > n {
					return errno
				}
			}
		}
		return nil
	}))
	opts := Options{SegmentBytes: 1024}
	l, err := Open(fs, "log", opts)
	must(t, err)
	armed = true
	m := &model{}
	states := []*model{m.clone()}
	lo := 0 // the last state made durable
	var failed error
	for k := 0; k < 60; k++ {
		next := m.clone()
		var err error
		durable := true
		switch {
		case k%7 == 6 && next.last() > next.truncIndex+3:
			i := next.last() - 3
			next.compact(i)
			err = l.Compact(i)
			durable = false
		case k%9 == 4:
			next.identity = []byte(fmt.Sprint("id", k))
			err = l.SetIdentity(next.identity)
		default:
			es := ents(next.last()+1, next.last()+3, 1, "f")
			h := hs(1, 1, uint64(k))
			next.append(h, es)
			durable = k%4 != 1
			err = l.Append(h, es, durable)
		}
		states = append(states, next)
		if err != nil {
			failed = err
			break
		}
		m = next
		if durable {
			lo = len(states) - 1
		}
	}
	if failed == nil {
		armed = false
		must(t, l.Close())
		return false
	}
	where := fmt.Sprintf("fault at call %d", n)
	if !errors.Is(failed, errno) {
		t.Fatalf("%s: the call returned %v, want %v", where, failed, errno)
	}
	if err := l.Failed(); !errors.Is(err, errno) {
		t.Fatalf("%s: Failed() = %v", where, err)
	}
	armed = false // the disk is healthy again, the log stays failed
	for name, call := range map[string]func() error{
		"Append":      func() error { return l.Append(nil, ents(m.last()+1, m.last()+1, 1, "x"), true) },
		"Compact":     func() error { return l.Compact(m.last()) },
		"Reset":       func() error { return l.Reset(1000, 9, nil) },
		"SetIdentity": func() error { return l.SetIdentity([]byte("x")) },
		"Sync":        l.Sync,
	} {
		if err := call(); !errors.Is(err, errno) {
			t.Fatalf("%s: %s after the failure = %v", where, name, err)
		}
	}
	_ = l.Close()
	// Reopen what was synced.
	l2, err := Open(mem.CrashClone(vfs.CrashCloneCfg{}), "log", opts)
	if err != nil {
		t.Fatalf("%s: reopen: %v", where, err)
	}
	var diffs []string
	for j := lo; j < len(states); j++ {
		d := diff(l2, states[j])
		if d == "" {
			diffs = nil
			break
		}
		diffs = append(diffs, d)
	}
	if diffs != nil {
		t.Fatalf("%s: the reopened log is in none of states %d..%d: %v", where, lo, len(states)-1, diffs)
	}
	_ = l2.Close()
	return true
}
