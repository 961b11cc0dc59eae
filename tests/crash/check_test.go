package crash

import (
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestBookCheck feeds the verifier stores that break each promise and
// checks that it names the break; a verifier that passes everything would
// make the crash test worthless.
func TestBookCheck(t *testing.T) {
	kv := func(key, value string, rev, version int64) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte(key), Value: []byte(value), CreateRevision: rev, ModRevision: rev, Version: version}
	}
	store := func(rev int64, kvs ...*mvccpb.KeyValue) *pb.RangeResponse {
		return &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: rev}, Kvs: kvs}
	}
	// Every case starts from: a (acked at 2), b+c (txn, acked at 3), d
	// (in flight).
	setup := func() (*book, *write) {
		b := newBook()
		b.ack(b.add([]string{"a"}, []string{"va"}), 2)
		b.ack(b.add([]string{"b", "c"}, []string{"vb", "vc"}), 3)
		return b, b.add([]string{"d"}, []string{"vd"})
	}
	tests := []struct {
		name  string
		store *pb.RangeResponse
		want  string // a fragment of the violation; "" for none
	}{
		{"all there", store(4, kv("a", "va", 2, 1), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1), kv("d", "vd", 4, 1)), ""},
		{"in-flight lost", store(3, kv("a", "va", 2, 1), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1)), ""},
		{"acked missing", store(3, kv("b", "vb", 3, 1), kv("c", "vc", 3, 1)), "missing"},
		{"half a txn", store(3, kv("a", "va", 2, 1), kv("b", "vb", 3, 1)), "partly"},
		{"applied twice", store(4, kv("a", "va", 4, 2), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1)), "version 2"},
		{"phantom", store(4, kv("a", "va", 2, 1), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1), kv("z", "?", 4, 1)), "never written"},
		{"wrong value", store(3, kv("a", "vx", 2, 1), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1)), "want \"va\""},
		{"wrong revision", store(5, kv("a", "va", 5, 1), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1)), "acknowledged at 2"},
		{"revision gap", store(5, kv("a", "va", 2, 1), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1), kv("d", "vd", 5, 1)), "belong to no write"},
		{"store behind", store(2, kv("a", "va", 2, 1), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1)), "above the store's revision"},
	}
	for _, tt := range tests {
		b, _ := setup()
		got := strings.Join(b.check(tt.store), "\n")
		switch {
		case tt.want == "" && got != "":
			t.Errorf("%s: unexpected violations:\n%s", tt.name, got)
		case tt.want != "" && !strings.Contains(got, tt.want):
			t.Errorf("%s: violations %q do not mention %q", tt.name, got, tt.want)
		}
	}

	// A write found lost after one restart must not show up after the next.
	b, d := setup()
	if v := b.check(store(3, kv("a", "va", 2, 1), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1))); len(v) > 0 {
		t.Fatalf("first check: %v", v)
	}
	if d.state != lost {
		t.Fatalf("in-flight write absent after a restart is in state %d, want lost", d.state)
	}
	got := strings.Join(b.check(store(4, kv("a", "va", 2, 1), kv("b", "vb", 3, 1), kv("c", "vc", 3, 1), kv("d", "vd", 4, 1))), "\n")
	if !strings.Contains(got, "absent after an earlier restart") {
		t.Errorf("a lost write reappearing is not reported; got %q", got)
	}
}
