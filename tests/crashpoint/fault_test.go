package crashpoint

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/cairn-db/cairn/internal/clustertest"
)

// TestDiskFaults injects a disk error into one member's tables (flushes,
// compactions, reads) while the cluster takes writes: the member must stop with an error or raise an alarm, and
// once the fault is gone and the member restarts on what its disk holds,
// it converges with the others and holds every acknowledged write.
func TestDiskFaults(t *testing.T) {
	writes := []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpCreate}
	syncs := []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}
	reads := []errorfs.OpKind{errorfs.OpFileRead, errorfs.OpFileReadAt}
	for _, tc := range []struct {
		name  string
		kinds []errorfs.OpKind
		errno syscall.Errno
	}{
		// A full device raises the NOSPACE alarm; a flush that fails
		// otherwise, and a read that fails, stop the member.
		{"ENOSPC writing tables", writes, syscall.ENOSPC},
		{"EIO writing tables", writes, syscall.EIO},
		{"EIO syncing tables", syncs, syscall.EIO},
		{"EIO reading tables", reads, syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seed := envInt(t, "CAIRN_CRASHPOINT_SEED", 1)
			rng := rand.New(rand.NewPCG(seed, 0x6661756c74))
			r := newRig(t, 3, seed, 0)
			r.writeUntil(rng, nil, nil, 50)
			r.check("before the fault")
			victim := r.c.Members()[rng.IntN(3)]
			d := r.disk(victim.Name)
			d.setFault(func(op errorfs.Op) error {
				if !slices.Contains(tc.kinds, op.Kind) || !strings.HasSuffix(op.Path, ".sst") {
					return nil
				}
				return &os.PathError{Op: opName(op.Kind), Path: op.Path, Err: tc.errno}
			})
			// Writes through the others; reads (which a read fault
			// needs) through the victim, serializable so they touch its
			// engine alone.
			for i := 0; i < 20 && d.injected() == 0; i++ {
				r.writeUntil(rng, victim, nil, 20)
				// Fill the victim's memtable (32 MiB) so that it flushes
				// to tables.
				r.bigWrites(victim, i, 16)
				if s := victim.Server(); s != nil {
					ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
					s.Range(ctx, &pb.RangeRequest{Key: []byte(keyPrefix), RangeEnd: []byte("k0"), Serializable: true})
					s.HashKV(ctx, 0)
					cancel()
				}
			}
			if d.injected() == 0 {
				t.Logf("%s: %s never reached the fault", tc.name, victim.Name)
			} else {
				// Never silence: the member stops with an error or says
				// what is wrong through an alarm.
				r.c.WaitFor(victim.Name+" to stop with an error or raise an alarm", func() bool {
					s := victim.Server()
					if s == nil {
						return victim.Err() != nil
					}
					return len(s.Alarms()) > 0
				})
				if err := victim.Err(); err != nil {
					t.Logf("%s: %s stopped: %v", tc.name, victim.Name, err)
				} else {
					t.Logf("%s: %s raised %v", tc.name, victim.Name, victim.Server().Alarms())
				}
			}
			// The fault is repaired; the member restarts on what its
			// disk holds (the process exited, the machine stayed up).
			victim.Stop()
			d.use(d.processExit())
			r.restart(victim)
			clearAlarms(t, r.c)
			r.writeUntil(rng, nil, nil, 20)
			r.check(fmt.Sprintf("seed %d: after %s on %s", seed, tc.name, victim.Name))
		})
	}
}

// clearAlarms disarms every alarm a fault raised, as an operator would
// once the disk is repaired.
func clearAlarms(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	lead := c.WaitLeader().Server()
	for _, a := range lead.Alarms() {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		_, err := lead.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: a.GetMemberID(), Alarm: a.GetAlarm()})
		cancel()
		if err != nil {
			t.Fatalf("disarming %v: %v", a, err)
		}
	}
}

// bigWrites puts n values of 512 KiB through members other than avoid,
// under keys outside keyPrefix; their outcome is left to the hash check.
func (r *rig) bigWrites(avoid *clustertest.Member, round, n int) {
	val := make([]byte, 512<<10)
	for i := range n {
		for _, m := range r.c.Running() {
			s := m.Server()
			if m == avoid || s == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			s.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("big/%d/%d", round, i)), Value: val})
			cancel()
			break
		}
	}
}
