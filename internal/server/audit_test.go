package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/auth"
)

type auditLine struct {
	Time         string `json:"time"`
	Member       string `json:"member"`
	Kind         string `json:"kind"`
	Method       string `json:"method"`
	User         string `json:"user"`
	Name         string `json:"name"`
	Role         string `json:"role"`
	Perm         string `json:"perm"`
	Key          string `json:"key"`
	RangeEnd     string `json:"range_end"`
	Lease        string `json:"lease"`
	Reason       string `json:"reason"`
	Index        uint64 `json:"index"`
	AuthRevision uint64 `json:"auth_revision"`
}

func readAudit(t *testing.T, path string) []auditLine {
	t.Helper()
	return readAuditAs(t, path, "m1")
}

// readAuditAs reads the log of member.
func readAuditAs(t *testing.T, path, member string) []auditLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if l.Time == "" || l.Member != member {
			t.Fatalf("audit line %q: no time or not member %s", sc.Text(), member)
		}
		out = append(out, l)
	}
	return out
}

// TestAuditLog: with --audit-log, the auth changes a member applies and
// the requests it refuses for auth reasons are in its log with their
// fields, and no password or hash is.
func TestAuditLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	s := startServer(t, t.TempDir(), func(c *Config) {
		c.Name, c.BcryptCost, c.UnsafeNoFsync, c.AuditLog = "m1", 4, true, path
	})
	setupAuth(t, s)
	alice := as(t, s, "alice", "pw")
	root := as(t, s, "root", "rootpw")
	ctx := context.Background()

	if err := putAs(alice, s, "z"); err != auth.ErrPermissionDenied {
		t.Fatalf("alice puts z: %v", err)
	}
	if _, err := s.Range(alice, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c")}); err != auth.ErrPermissionDenied {
		t.Fatalf("alice reads [a, c): %v", err)
	}
	if err := putAs(ctx, s, "k1"); err != auth.ErrUserEmpty {
		t.Fatalf("nobody puts k1: %v", err)
	}
	if _, err := s.Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "wrong"}); err != auth.ErrAuthFailed {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := s.UserAdd(alice, &pb.AuthUserAddRequest{Name: "bob", Password: "bobpw"}); err != auth.ErrPermissionDenied {
		t.Fatalf("alice adds bob: %v", err)
	}
	if err := s.WatchPermitted(alice, []byte("x"), nil); err != auth.ErrPermissionDenied {
		t.Fatalf("alice watches x: %v", err)
	}
	if err := s.IsAdmin(alice); err != auth.ErrPermissionDenied {
		t.Fatalf("alice as admin: %v", err)
	}
	if _, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60}); err != auth.ErrUserEmpty {
		t.Fatalf("nobody grants a lease: %v", err)
	}
	if err := putAs(WithCredentials(ctx, "forged.1", ""), s, "k1"); err != auth.ErrInvalidAuthToken {
		t.Fatalf("forged token: %v", err)
	}
	// Allowed requests are not logged.
	if err := putAs(alice, s, "k1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserChangePassword(root, &pb.AuthUserChangePasswordRequest{Name: "alice", Password: "pw2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RoleRevokePermission(root, &pb.AuthRoleRevokePermissionRequest{Role: "rw", Key: []byte("k"), RangeEnd: []byte("l")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthDisable(root, &pb.AuthDisableRequest{}); err != nil {
		t.Fatal(err)
	}
	s.Stop() // flushes the log

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"rootpw", "bobpw", "pw2", "$2a$"} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the audit log holds %q:\n%s", secret, raw)
		}
	}
	var changes, refusals []auditLine
	lastIndex := uint64(0)
	for _, l := range readAudit(t, path) {
		switch l.Kind {
		case "auth_change":
			if l.Index <= lastIndex || l.AuthRevision == 0 {
				t.Fatalf("change %+v: index not increasing past %d, or no auth revision", l, lastIndex)
			}
			lastIndex = l.Index
			l.Time, l.Member, l.Index, l.AuthRevision = "", "", 0, 0
			changes = append(changes, l)
		case "refused":
			l.Time, l.Member = "", ""
			refusals = append(refusals, l)
		default:
			t.Fatalf("line of kind %q", l.Kind)
		}
	}
	denied := auth.ErrPermissionDenied.Error()
	wantChanges := []auditLine{
		{Kind: "auth_change", Method: "UserAdd", Name: "root"},
		{Kind: "auth_change", Method: "RoleAdd", Name: "root"},
		{Kind: "auth_change", Method: "UserGrantRole", Name: "root", Role: "root"},
		{Kind: "auth_change", Method: "RoleAdd", Name: "rw"},
		{Kind: "auth_change", Method: "RoleGrantPermission", Name: "rw", Perm: authpb.READWRITE.String(), Key: "k", RangeEnd: "l"},
		{Kind: "auth_change", Method: "UserAdd", Name: "alice"},
		{Kind: "auth_change", Method: "UserGrantRole", Name: "alice", Role: "rw"},
		{Kind: "auth_change", Method: "AuthEnable"},
		{Kind: "auth_change", Method: "UserChangePassword", User: "root", Name: "alice"},
		{Kind: "auth_change", Method: "RoleRevokePermission", User: "root", Name: "rw", Key: "k", RangeEnd: "l"},
		{Kind: "auth_change", Method: "AuthDisable", User: "root"},
	}
	wantRefusals := []auditLine{
		{Kind: "refused", Method: "Put", User: "alice", Key: "z", Reason: denied},
		{Kind: "refused", Method: "Range", User: "alice", Key: "a", RangeEnd: "c", Reason: denied},
		{Kind: "refused", Method: "Put", Key: "k1", Reason: auth.ErrUserEmpty.Error()},
		{Kind: "refused", Method: "Authenticate", User: "alice", Reason: auth.ErrAuthFailed.Error()},
		{Kind: "refused", Method: "UserAdd", User: "alice", Name: "bob", Reason: denied},
		{Kind: "refused", Method: "Watch", User: "alice", Key: "x", Reason: denied},
		{Kind: "refused", Method: "admin", User: "alice", Reason: denied},
		{Kind: "refused", Method: "LeaseGrant", Reason: auth.ErrUserEmpty.Error()},
		{Kind: "refused", Method: "Put", Key: "k1", Reason: auth.ErrInvalidAuthToken.Error()},
	}
	if !equalLines(changes, wantChanges) {
		t.Fatalf("auth changes\n%+v\nwant\n%+v", changes, wantChanges)
	}
	if !equalLines(refusals, wantRefusals) {
		t.Fatalf("refusals\n%+v\nwant\n%+v", refusals, wantRefusals)
	}
}

func equalLines(a, b []auditLine) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAuditLogLeaseAndTxnRefusals: the refusals of the lease access checks
// (LeaseRevoke, keep-alive, LeaseTimeToLive with keys, LeaseLeases, a put
// onto a lease holding keys the caller may not write) and of txns (read
// only or not, nested) are logged with the user, the method, the key
// range that lacked the permission and the lease.
func TestAuditLogLeaseAndTxnRefusals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	s := startServer(t, t.TempDir(), func(c *Config) {
		c.Name, c.BcryptCost, c.UnsafeNoFsync, c.AuditLog = "m1", 4, true, path
	})
	setupAuth(t, s)
	alice := as(t, s, "alice", "pw")
	root := as(t, s, "root", "rootpw")

	// Lease lz holds z, which alice may not write.
	lz, err := s.LeaseGrant(root, &pb.LeaseGrantRequest{TTL: 600})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(root, &pb.PutRequest{Key: []byte("z"), Value: []byte("v"), Lease: lz.ID}); err != nil {
		t.Fatal(err)
	}
	hexID := strconv.FormatInt(lz.ID, 16)
	denied := auth.ErrPermissionDenied.Error()
	put := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte("v")}}}
	}
	steps := []struct {
		name string
		do   func() error
		want auditLine
	}{
		{"LeaseRevoke", func() error {
			_, err := s.LeaseRevoke(alice, &pb.LeaseRevokeRequest{ID: lz.ID})
			return err
		}, auditLine{Method: "LeaseRevoke", Key: "z", Lease: hexID}},
		{"LeaseTimeToLive with keys", func() error {
			_, err := s.LeaseTimeToLive(alice, &pb.LeaseTimeToLiveRequest{ID: lz.ID, Keys: true})
			return err
		}, auditLine{Method: "LeaseTimeToLive", Key: "z", Lease: hexID}},
		{"keep-alive", func() error {
			_, err := s.LeaseRenew(alice, lz.ID)
			return err
		}, auditLine{Method: "LeaseKeepAlive", Key: "z", Lease: hexID}},
		{"LeaseLeases", func() error {
			_, err := s.LeaseLeases(alice, &pb.LeaseLeasesRequest{})
			return err
		}, auditLine{Method: "LeaseLeases", Key: "z", Lease: hexID}},
		{"a put onto the lease", func() error {
			_, err := s.Put(alice, &pb.PutRequest{Key: []byte("k2"), Value: []byte("v"), Lease: lz.ID})
			return err
		}, auditLine{Method: "Put", Key: "z", Lease: hexID}},
		{"a write txn", func() error {
			_, err := s.Txn(alice, &pb.TxnRequest{
				Compare: []*pb.Compare{{Key: []byte("k1"), Target: pb.Compare_VERSION}},
				Success: []*pb.RequestOp{put("k1")}, Failure: []*pb.RequestOp{put("y")}})
			return err
		}, auditLine{Method: "Txn", Key: "y"}},
		{"a read-only txn", func() error {
			_, err := s.Txn(alice, &pb.TxnRequest{Success: []*pb.RequestOp{
				{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k1")}}},
				{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c")}}},
			}})
			return err
		}, auditLine{Method: "Txn", Key: "a", RangeEnd: "c"}},
		{"a nested txn", func() error {
			_, err := s.Txn(alice, &pb.TxnRequest{Success: []*pb.RequestOp{put("k3"), {Request: &pb.RequestOp_RequestTxn{
				RequestTxn: &pb.TxnRequest{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{
					RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k"), RangeEnd: []byte("m")}}}}}}}}})
			return err
		}, auditLine{Method: "Txn", Key: "k", RangeEnd: "m"}},
		{"a compare", func() error {
			_, err := s.Txn(alice, &pb.TxnRequest{
				Compare: []*pb.Compare{{Key: []byte("x"), RangeEnd: []byte("\x00"), Target: pb.Compare_VERSION}},
				Success: []*pb.RequestOp{put("k1")}})
			return err
		}, auditLine{Method: "Txn", Key: "x", RangeEnd: "\x00"}},
	}
	var want []auditLine
	for _, st := range steps {
		if err := st.do(); !errors.Is(err, auth.ErrPermissionDenied) {
			t.Fatalf("%s as alice: %v, want %v", st.name, err, auth.ErrPermissionDenied)
		}
		st.want.Kind, st.want.User, st.want.Reason = "refused", "alice", denied
		want = append(want, st.want)
	}
	// Any user may compact, as in etcd; a bad token is refused, under the
	// RPC's name.
	if _, err := s.Compact(WithCredentials(context.Background(), "forged.1", ""), &pb.CompactionRequest{Revision: 1}); !errors.Is(err, auth.ErrInvalidAuthToken) {
		t.Fatalf("Compact with a forged token: %v", err)
	}
	want = append(want, auditLine{Kind: "refused", Method: "Compact", Reason: auth.ErrInvalidAuthToken.Error()})
	// A read-only txn with a bad token names its first key range.
	readTxn := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k1"), RangeEnd: []byte("k9")}}}}}
	if _, err := s.Txn(WithCredentials(context.Background(), "forged.1", ""), readTxn); !errors.Is(err, auth.ErrInvalidAuthToken) {
		t.Fatalf("a read-only txn with a forged token: %v", err)
	}
	want = append(want, auditLine{Kind: "refused", Method: "Txn", Key: "k1", RangeEnd: "k9", Reason: auth.ErrInvalidAuthToken.Error()})
	// Without a user, a lease call names its lease.
	if _, err := s.LeaseRevoke(context.Background(), &pb.LeaseRevokeRequest{ID: lz.ID}); !errors.Is(err, auth.ErrUserEmpty) {
		t.Fatalf("LeaseRevoke without a user: %v", err)
	}
	want = append(want, auditLine{Kind: "refused", Method: "LeaseRevoke", Lease: hexID, Reason: auth.ErrUserEmpty.Error()})
	s.Stop()
	var got []auditLine
	for _, l := range readAudit(t, path) {
		if l.Kind == "refused" {
			l.Time, l.Member = "", ""
			got = append(got, l)
		}
	}
	if !equalLines(got, want) {
		t.Fatalf("refusals\n%+v\nwant\n%+v", got, want)
	}
}

// TestAuditLogOff: without --audit-log nothing is recorded and no file
// appears, refusals and changes alike.
func TestAuditLogOff(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, filepath.Join(dir, "data"), func(c *Config) { c.BcryptCost = 4; c.UnsafeNoFsync = true })
	if s.auth.audit != nil {
		t.Fatal("an audit log without --audit-log")
	}
	setupAuth(t, s)
	alice := as(t, s, "alice", "pw")
	if err := putAs(alice, s, "z"); err != auth.ErrPermissionDenied {
		t.Fatalf("alice puts z: %v", err)
	}
	s.Stop()
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("%v (%v): want only the data directory", ents, err)
	}
}

// TestAuditLogEveryMember: in a cluster of three, every member's log holds
// every auth change, with the same indexes and auth revisions, and a
// refusal is in the log of the member that answered it only.
func TestAuditLogEveryMember(t *testing.T) {
	ms := []*peerMember{listenPeer(t, "a"), listenPeer(t, "b"), listenPeer(t, "c")}
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.name+"="+m.url)
	}
	logs := map[string]string{}
	for _, m := range ms {
		m.cfg = peerConfig(t, m, strings.Join(parts, ","))
		m.cfg.BcryptCost = 4
		logs[m.name] = filepath.Join(t.TempDir(), "audit.log")
		m.cfg.AuditLog = logs[m.name]
		m.start(t)
	}
	waitUntil(t, "a leader", func() bool {
		for _, m := range ms {
			if m.s.Leader() == 0 {
				return false
			}
		}
		return true
	})
	setupAuth(t, ms[0].s)
	b := ms[1].s
	// b's token: b must have applied the entry that issued it.
	alice := as(t, b, "alice", "pw")
	if err := putAs(alice, b, "z"); err != auth.ErrPermissionDenied {
		t.Fatalf("alice puts z on b: %v", err)
	}
	// Every member applies the last change before it stops.
	want := ms[0].s.auth.st().Revision()
	waitUntil(t, "every member at the last auth revision", func() bool {
		for _, m := range ms {
			if m.s.auth.st().Revision() != want || !m.s.AuthEnabled() {
				return false
			}
		}
		return true
	})
	for _, m := range ms {
		m.stop()
	}
	type change struct {
		method, name string
		index, rev   uint64
	}
	var first []change
	for _, m := range ms {
		var changes []change
		refusals := 0
		for _, l := range readAuditAs(t, logs[m.name], m.name) {
			switch l.Kind {
			case "auth_change":
				changes = append(changes, change{l.Method, l.Name, l.Index, l.AuthRevision})
			case "refused":
				refusals++
				if l.Method != "Put" || l.User != "alice" || l.Key != "z" {
					t.Fatalf("%s: refusal %+v", m.name, l)
				}
			}
		}
		if len(changes) != 8 {
			t.Fatalf("%s: %d changes, want setupAuth's 8: %v", m.name, len(changes), changes)
		}
		if first == nil {
			first = changes
		} else if !slices.Equal(changes, first) {
			t.Fatalf("%s's changes %v, a's %v", m.name, changes, first)
		}
		if wantRefusals := map[bool]int{true: 1, false: 0}[m.name == "b"]; refusals != wantRefusals {
			t.Fatalf("%s: %d refusals, want %d", m.name, refusals, wantRefusals)
		}
	}
}
