package membership

import (
	"encoding/json"
	"testing"

	"github.com/cairn-db/cairn/internal/storage"
)

// TestEtcdDefaultIDs pins the IDs etcd reports for a member started with its
// defaults: clients and tools that compare IDs see the same numbers.
func TestEtcdDefaultIDs(t *testing.T) {
	initial, err := ParseInitialCluster("default=http://localhost:2380")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := InitialMembers(initial, "etcd-cluster")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].ID != 0x8e9e05c52164694d || ms[0].Name != "default" {
		t.Fatalf("members = %+v, want default with ID 8e9e05c52164694d", ms)
	}
	if cid := ClusterID([]uint64{ms[0].ID}); cid != 0xcdf818194e3a8c32 {
		t.Fatalf("cluster ID = %x, want cdf818194e3a8c32", cid)
	}
}

func TestMemberIDOrderIndependent(t *testing.T) {
	a, err := MemberID([]string{"http://10.0.0.2:2380", "http://10.0.0.1:2380"}, "tok")
	if err != nil {
		t.Fatal(err)
	}
	b, err := MemberID([]string{"http://10.0.0.1:2380", " http://10.0.0.2:2380"}, "tok")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := MemberID([]string{"http://10.0.0.1:2380", "http://10.0.0.2:2380"}, "other")
	if a != b || a == c {
		t.Fatalf("IDs %x %x %x: want the first two equal and the third different", a, b, c)
	}
	for _, bad := range []string{"http://nohost", "ftp://h:1", "http://h:1/path"} {
		if _, err := MemberID([]string{bad}, "tok"); err == nil {
			t.Errorf("MemberID(%q) succeeded", bad)
		}
	}
}

func TestPersistMembers(t *testing.T) {
	dir := t.TempDir()
	eng, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := LoadClusterID(eng); ok || err != nil {
		t.Fatalf("new engine has a cluster ID (ok=%v, err=%v)", ok, err)
	}
	b := eng.NewBatch()
	if err := StageClusterID(b, 42); err != nil {
		t.Fatal(err)
	}
	for _, m := range []Member{{ID: 3, Name: "c", PeerURLs: []string{"http://c:2380"}}, {ID: 1, Name: "a", PeerURLs: []string{"http://a:2380"}}} {
		if err := StageMember(b, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	b = eng.NewBatch()
	if err := StageRemoveMember(b, 3); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	eng.Close()
	eng, err = storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	id, ok, err := LoadClusterID(eng)
	if err != nil || !ok || id != 42 {
		t.Fatalf("cluster ID = %d, %v, %v", id, ok, err)
	}
	ms, err := LoadMembers(eng)
	if err != nil || len(ms) != 1 || ms[0].Name != "a" || ms[0].PeerURLs[0] != "http://a:2380" {
		t.Fatalf("members = %+v, %v", ms, err)
	}
}

func TestValidate(t *testing.T) {
	members := []Member{
		{ID: 1, Name: "a", PeerURLs: []string{"http://a:2380"}},
		{ID: 2, Name: "b", PeerURLs: []string{"http://b:2380"}},
		{ID: 3, PeerURLs: []string{"http://c:2380"}, IsLearner: true},
	}
	removed := map[uint64]bool{9: true}
	for _, tc := range []struct {
		name string
		ch   Change
		want error
	}{
		{"add voter", Change{KindAdd, Member{ID: 4, PeerURLs: []string{"http://d:2380"}}}, nil},
		{"add removed ID", Change{KindAdd, Member{ID: 9, PeerURLs: []string{"http://d:2380"}}}, ErrIDRemoved},
		{"add existing ID", Change{KindAdd, Member{ID: 2, PeerURLs: []string{"http://d:2380"}}}, ErrIDExists},
		{"add taken URL", Change{KindAdd, Member{ID: 4, PeerURLs: []string{"http://b:2380"}}}, ErrPeerURLExists},
		{"second learner", Change{KindAdd, Member{ID: 4, PeerURLs: []string{"http://d:2380"}, IsLearner: true}}, ErrTooManyLearners},
		{"promote learner", Change{KindPromote, Member{ID: 3}}, nil},
		{"promote voter", Change{KindPromote, Member{ID: 1}}, ErrMemberNotLearner},
		{"promote unknown", Change{KindPromote, Member{ID: 7}}, ErrIDNotFound},
		{"remove", Change{KindRemove, Member{ID: 1}}, nil},
		{"remove unknown", Change{KindRemove, Member{ID: 7}}, ErrIDNotFound},
		{"remove removed", Change{KindRemove, Member{ID: 9}}, ErrIDRemoved},
		{"update own URL", Change{KindUpdate, Member{ID: 2, PeerURLs: []string{"http://b:2380", "http://b2:2380"}}}, nil},
		{"update to taken URL", Change{KindUpdate, Member{ID: 2, PeerURLs: []string{"http://a:2380"}}}, ErrPeerURLExists},
		{"update unknown", Change{KindUpdate, Member{ID: 7}}, ErrIDNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Validate(members, removed, tc.ch, 1); err != tc.want {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
	if err := Validate(members[:1], nil, Change{KindRemove, Member{ID: 1}}, 1); err != ErrLastVoter {
		t.Fatalf("removing the last voter: %v, want ErrLastVoter", err)
	}
}

func TestChangeContextDecodesBootstrapMember(t *testing.T) {
	m := Member{ID: 5, Name: "n", PeerURLs: []string{"http://n:2380"}}
	v, _ := json.Marshal(m)
	var cc ChangeContext
	if err := json.Unmarshal(v, &cc); err != nil || cc.Member.ID != 5 || cc.Name != "n" || cc.IsPromote {
		t.Fatalf("decoded %+v, %v", cc, err)
	}
	v, _ = json.Marshal(ChangeContext{Member: Member{ID: 5}, IsPromote: true})
	cc = ChangeContext{}
	if err := json.Unmarshal(v, &cc); err != nil || !cc.IsPromote || cc.Member.ID != 5 {
		t.Fatalf("decoded %+v from %s, %v", cc, v, err)
	}
}
