package raftlog

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// BenchmarkAppend appends one 256-byte entry and a hard state per call to
// a log on the real filesystem (the test's temporary directory), with and
// without fdatasync.
func BenchmarkAppend(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) {
			l, err := Open(vfs.Default, b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			e := &raftpb.Entry{Index: new(uint64(0)), Term: new(uint64(1)), Type: raftpb.EntryType_EntryNormal.Enum(), Data: make([]byte, 256)}
			h := &raftpb.HardState{Term: new(uint64(1)), Vote: new(uint64(1)), Commit: new(uint64(0))}
			batch := []*raftpb.Entry{e}
			b.SetBytes(256)
			b.ReportAllocs()
			b.ResetTimer()
			for i := uint64(1); i <= uint64(b.N); i++ {
				*e.Index = i
				*h.Commit = i - 1
				if err := l.Append(h, batch, sync); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
