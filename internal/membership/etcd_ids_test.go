package membership

import (
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	etcdmembership "go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.uber.org/zap"
)

// TestIDsMatchEtcd derives the member and cluster IDs of a three-member
// cluster, and of a member added at runtime, with etcd's own code and ours.
func TestIDsMatchEtcd(t *testing.T) {
	const initial = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n2=http://10.0.0.22:2380,n3=https://n3.example:2380"
	const token = "my-cluster"
	urls, err := types.NewURLsMap(initial)
	if err != nil {
		t.Fatal(err)
	}
	want, err := etcdmembership.NewClusterFromURLsMap(zap.NewNop(), token, urls)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseInitialCluster(initial)
	if err != nil {
		t.Fatal(err)
	}
	members, err := InitialMembers(parsed, token)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]uint64, len(members))
	for i, m := range members {
		ids[i] = m.ID
		em := want.Member(types.ID(m.ID))
		if em == nil || em.Name != m.Name {
			t.Fatalf("member %s has ID %x, which etcd does not give it", m.Name, m.ID)
		}
	}
	if got := ClusterID(ids); got != uint64(want.ID()) {
		t.Fatalf("cluster ID %x, etcd's %x", got, uint64(want.ID()))
	}

	now := time.Unix(1_900_000_000, 0)
	peer, _ := types.NewURLs([]string{"http://10.0.0.4:2380"})
	added := etcdmembership.NewMember("", peer, "", &now)
	got, err := NewMemberID([]string{"http://10.0.0.4:2380"}, now)
	if err != nil || got != uint64(added.ID) {
		t.Fatalf("added member ID %x (%v), etcd's %x", got, err, uint64(added.ID))
	}
}
