package lease

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairn-db/cairn/internal/mvcc"
)

func TestMinTTL(t *testing.T) {
	for _, tc := range []struct {
		heartbeat time.Duration
		ticks     int
		want      int64
	}{
		{100 * time.Millisecond, 10, 2}, // etcd's defaults: 1.5 s rounds up
		{100 * time.Millisecond, 20, 3},
		{50 * time.Millisecond, 5, 1},    // (3*5)/2 = 7 ticks = 350 ms
		{time.Second, 10, 15},            // exactly 15 s
		{10 * time.Millisecond, 1, 1},    // (3*1)/2 = 1 tick
		{300 * time.Millisecond, 3, 2},   // 4 ticks = 1.2 s
		{100 * time.Millisecond, 0, 0},   // no election timeout: no minimum
		{250 * time.Millisecond, 40, 15}, // 60 ticks = 15 s
	} {
		if got := MinTTL(tc.heartbeat, tc.ticks); got != tc.want {
			t.Errorf("MinTTL(%v, %d) = %d, want %d", tc.heartbeat, tc.ticks, got, tc.want)
		}
	}
}

func TestGrant(t *testing.T) {
	for _, tc := range []struct {
		name    string
		id, ttl int64
		want    int64
		err     error
	}{
		{name: "plain", id: 1, ttl: 10, want: 10},
		{name: "below the minimum", id: 2, ttl: 1, want: 5},
		{name: "zero TTL", id: 3, ttl: 0, want: 5},
		{name: "negative TTL", id: 4, ttl: -7, want: 5},
		{name: "the minimum", id: 5, ttl: 5, want: 5},
		{name: "the maximum", id: 6, ttl: MaxTTL, want: MaxTTL},
		{name: "above the maximum", id: 7, ttl: MaxTTL + 1, err: ErrLeaseTTLTooLarge},
		{name: "negative ID", id: -9, ttl: 10, want: 10},
		{name: "ID 0 names no lease", id: 0, ttl: 10, err: ErrLeaseNotFound},
		{name: "existing ID", id: 100, ttl: 10, err: ErrLeaseExists},
		{name: "existing ID and too large: TTL checked first", id: 100, ttl: MaxTTL + 1, err: ErrLeaseTTLTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMember(t, Options{MinTTL: 5})
			m.grant(100, 30)
			m.le.Promote(0)
			var got int64
			var err error
			m.apply(func(a *applier) { got, err = a.grant(tc.id, tc.ttl) })
			if !isErr(err, tc.err) {
				t.Fatalf("Grant(%d, %d) error = %v, want %v", tc.id, tc.ttl, err, tc.err)
			}
			if err != nil {
				if tc.id != 100 && m.le.Exists(tc.id) {
					t.Fatalf("lease %d exists after a failed grant", tc.id)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("Grant(%d, %d) TTL = %d, want %d", tc.id, tc.ttl, got, tc.want)
			}
			if ttl := m.ttl(tc.id); ttl != tc.want {
				t.Fatalf("TimeToLive = %d, want %d", ttl, tc.want)
			}
			m.reopen()
			if inf, ok := m.le.Lookup(tc.id); !ok || inf.TTL != tc.want {
				t.Fatalf("after reopen Lookup = %+v, %v; want TTL %d", inf, ok, tc.want)
			}
		})
	}
}

func TestGrantMinTTLDefault(t *testing.T) {
	m := newMember(t, Options{})
	if got := m.grant(1, 1); got != 2 {
		t.Fatalf("default minimum TTL: granted %d, want etcd's 2", got)
	}
}

func TestRevokeDeletesSortedKeysInOneRevision(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	m.grant(1, 10)
	m.grant(2, 10)
	for _, k := range []string{"m", "b", "zz", "a\x00", "a", "\xff"} {
		m.put(k, 1)
	}
	m.put("other", 2)
	m.put("plain", 0)
	rev := m.kv.Rev()

	var evs []*mvccpb.Event
	var resp *pb.TxnResponse
	m.apply(func(a *applier) {
		var err error
		if resp, err = a.revoke(1); err != nil {
			t.Fatal(err)
		}
		evs = a.w.Events()
	})
	want := []string{"a", "a\x00", "b", "m", "zz", "\xff"}
	var got []string
	for _, ev := range evs {
		if ev.Type != mvccpb.Event_DELETE || ev.Kv.ModRevision != rev+1 || ev.PrevKv.Lease != 1 {
			t.Errorf("event %v: want a DELETE at revision %d of a key of lease 1", ev, rev+1)
		}
		got = append(got, string(ev.Kv.Key))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("revoke deleted %q, want %q in this order", got, want)
	}
	if resp.Header.Revision != rev+1 || m.kv.Rev() != rev+1 {
		t.Fatalf("revoke took revisions up to %d, want exactly one (%d)", m.kv.Rev(), rev+1)
	}
	for _, k := range want {
		if m.get(k) != -1 {
			t.Errorf("key %q survived its lease's revoke", k)
		}
	}
	if m.get("other") != 2 || m.get("plain") != 0 {
		t.Fatal("revoke touched keys of another lease or none")
	}
	if m.le.Exists(1) {
		t.Fatal("lease 1 exists after revoke")
	}
	if ks := m.keys(1); len(ks) != 0 {
		t.Fatalf("revoked lease still has keys %q", ks)
	}
	m.apply(func(a *applier) {
		if _, err := a.revoke(1); !errors.Is(err, ErrLeaseNotFound) {
			t.Fatalf("second revoke: %v, want ErrLeaseNotFound", err)
		}
	})
	m.reopen()
	if m.le.Exists(1) || !m.le.Exists(2) {
		t.Fatal("after reopen: revoked lease back, or the other gone")
	}
	if ks := m.keys(2); !slices.Equal(ks, []string{"other"}) {
		t.Fatalf("after reopen lease 2 has keys %q", ks)
	}
}

func TestRevokeWithoutKeysTakesNoRevision(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	m.grant(1, 10)
	rev := m.kv.Rev()
	m.revoke(1)
	if m.kv.Rev() != rev {
		t.Fatalf("revoking a lease without keys moved the revision %d → %d", rev, m.kv.Rev())
	}
}

// TestRevokeInTheSameBatch checks a group apply: a lease granted, given
// keys and revoked in one batch still deletes its keys.
func TestRevokeInTheSameBatch(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	m.apply(func(a *applier) {
		if _, err := a.grant(7, 10); err != nil {
			t.Fatal(err)
		}
		if err := a.put("k1", 7); err != nil {
			t.Fatal(err)
		}
		if err := a.put("k2", 7); err != nil {
			t.Fatal(err)
		}
		if err := a.put("k1", 0); err != nil { // detached again
			t.Fatal(err)
		}
		resp, err := a.revoke(7)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.Responses); n != 1 {
			t.Fatalf("revoke deleted %d keys, want 1 (k2)", n)
		}
	})
	if m.get("k1") != 0 || m.get("k2") != -1 {
		t.Fatalf("k1 lease %d (want 0, kept), k2 %d (want deleted)", m.get("k1"), m.get("k2"))
	}
}

func TestAttachDetach(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  func(a *applier) error
		// want maps each lease to its keys afterwards.
		want map[int64][]string
	}{
		{
			name: "put with a lease attaches",
			ops:  func(a *applier) error { return a.put("k", 1) },
			want: map[int64][]string{1: {"k"}, 2: {}},
		},
		{
			name: "re-put without a lease detaches",
			ops: func(a *applier) error {
				a.put("k", 1)
				return a.put("k", 0)
			},
			want: map[int64][]string{1: {}, 2: {}},
		},
		{
			name: "re-put with ignore_lease keeps it",
			ops: func(a *applier) error {
				a.put("k", 1)
				return a.do(func(w *mvcc.Write) error {
					_, err := w.Put(&pb.PutRequest{Key: []byte("k"), Value: []byte("x"), IgnoreLease: true})
					return err
				})
			},
			want: map[int64][]string{1: {"k"}, 2: {}},
		},
		{
			name: "re-put with another lease moves it",
			ops: func(a *applier) error {
				a.put("k", 1)
				return a.put("k", 2)
			},
			want: map[int64][]string{1: {}, 2: {"k"}},
		},
		{
			name: "re-put with the same lease keeps it",
			ops: func(a *applier) error {
				a.put("k", 1)
				return a.put("k", 1)
			},
			want: map[int64][]string{1: {"k"}, 2: {}},
		},
		{
			name: "delete detaches",
			ops: func(a *applier) error {
				a.put("k", 1)
				a.put("j", 1)
				return a.do(func(w *mvcc.Write) error {
					_, err := w.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("k")})
					return err
				})
			},
			want: map[int64][]string{1: {"j"}, 2: {}},
		},
		{
			name: "range delete detaches from several leases",
			ops: func(a *applier) error {
				a.put("a", 1)
				a.put("b", 2)
				a.put("c", 1)
				a.put("z", 2)
				return a.do(func(w *mvcc.Write) error {
					_, err := w.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("d")})
					return err
				})
			},
			want: map[int64][]string{1: {}, 2: {"z"}},
		},
		{
			name: "txn puts and deletes",
			ops: func(a *applier) error {
				a.put("old", 2)
				return a.do(func(w *mvcc.Write) error {
					_, err := w.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{
						{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("t1"), Lease: 1}}},
						{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("t2"), Lease: 2}}},
						{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("old")}}},
					}})
					return err
				})
			},
			want: map[int64][]string{1: {"t1"}, 2: {"t2"}},
		},
		{
			name: "put with an unknown lease fails and attaches nothing",
			ops: func(a *applier) error {
				err := a.put("k", 3)
				if !errors.Is(err, mvcc.ErrLeaseNotFound) {
					return fmt.Errorf("put with lease 3: %v, want mvcc.ErrLeaseNotFound", err)
				}
				return nil
			},
			want: map[int64][]string{1: {}, 2: {}, 3: {}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMember(t, Options{MinTTL: 1})
			m.grant(1, 10)
			m.grant(2, 10)
			m.apply(func(a *applier) {
				if err := tc.ops(a); err != nil {
					t.Fatal(err)
				}
			})
			check := func(when string) {
				for id, want := range tc.want {
					if got := m.keys(id); !slices.Equal(got, want) {
						t.Errorf("%s: lease %d has keys %q, want %q", when, id, got, want)
					}
				}
			}
			check("applied")
			m.reopen()
			check("after reopen")
		})
	}
}

func TestApplyEventsRefusesUnknownLease(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	b := m.eng.NewBatch()
	defer b.Discard()
	ev := &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), Lease: 42}}
	if err := m.le.ApplyEvents(b, []*mvccpb.Event{ev}); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("attach to an unknown lease: %v, want ErrLeaseNotFound", err)
	}
}

func TestTimeToLive(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	m.grant(1, 10)
	m.put("b", 1)
	m.put("a", 1)
	if _, err := m.le.TimeToLive(&pb.LeaseTimeToLiveRequest{ID: 1}); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("TimeToLive before Promote: %v, want ErrNotPrimary", err)
	}
	m.le.Promote(0)
	m.clock.Advance(2500 * time.Millisecond)
	resp, err := m.le.TimeToLive(&pb.LeaseTimeToLiveRequest{ID: 1, Keys: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ID != 1 || resp.TTL != 7 || resp.GrantedTTL != 10 {
		t.Fatalf("TimeToLive = %v, want ID 1, TTL 7 (7.5 s truncated), granted 10", resp)
	}
	if len(resp.Keys) != 2 || string(resp.Keys[0]) != "a" || string(resp.Keys[1]) != "b" {
		t.Fatalf("TimeToLive keys = %q, want [a b]", resp.Keys)
	}
	if resp, _ := m.le.TimeToLive(&pb.LeaseTimeToLiveRequest{ID: 1}); resp.Keys != nil {
		t.Fatalf("keys not asked for, got %q", resp.Keys)
	}
	if _, err := m.le.TimeToLive(&pb.LeaseTimeToLiveRequest{ID: 2}); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("TimeToLive of an unknown lease: %v, want ErrLeaseNotFound", err)
	}
	m.clock.Advance(time.Hour)
	if ttl := m.ttl(1); ttl != 0 {
		t.Fatalf("TTL of an expired, not yet revoked lease = %d, want 0", ttl)
	}
}

func TestLeases(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	for _, g := range [][2]int64{{5, 30}, {3, 10}, {9, 20}, {1, 30}} {
		m.grant(g[0], g[1])
	}
	if got, want := m.le.Leases(), []int64{1, 3, 5, 9}; !slices.Equal(got, want) {
		t.Fatalf("follower Leases = %v, want %v (ID order)", got, want)
	}
	m.le.Promote(0)
	if got, want := m.le.Leases(), []int64{3, 9, 1, 5}; !slices.Equal(got, want) {
		t.Fatalf("leader Leases = %v, want %v (soonest to expire first)", got, want)
	}
	if m.le.Len() != 4 {
		t.Fatalf("Len = %d, want 4", m.le.Len())
	}
}

// TestReload checks that a lessor picks up leases that appeared in its
// engine behind its back (an ingested snapshot), with running clocks on
// the primary.
func TestReload(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	m.grant(1, 10)
	m.le.Promote(0)
	other, err := Open(m.eng, Options{MinTTL: 1, Clock: m.clock})
	if err != nil {
		t.Fatal(err)
	}
	b := m.eng.NewBatch()
	if _, err := other.Grant(b, 77, 30); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Revoke(b, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if err := m.le.Reload(); err != nil {
		t.Fatal(err)
	}
	if m.le.Exists(1) || !m.le.Exists(77) {
		t.Fatal("Reload did not replace the leases with the engine's")
	}
	if ttl := m.ttl(77); ttl != 30 {
		t.Fatalf("reloaded lease TTL = %d, want 30 on a running clock", ttl)
	}
	m.clock.Advance(30 * time.Second)
	if ids := m.le.Expired(10); !slices.Equal(ids, []int64{77}) {
		t.Fatalf("Expired after reload = %v, want [77]", ids)
	}
}

func TestHugeTTLKeepsRunningClock(t *testing.T) {
	m := newMember(t, Options{MinTTL: 1})
	m.le.Promote(time.Hour)
	m.clock.Advance(100 * 365 * 24 * time.Hour) // a long-lived process
	m.grant(1, MaxTTL)
	if ttl := m.ttl(1); ttl <= 0 {
		t.Fatalf("TTL of a MaxTTL lease = %d, want a large positive number", ttl)
	}
}
