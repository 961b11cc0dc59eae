package mvcc

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// RangePage must give the same page as Range but stop reading at the limit:
// its Count is the keys it read, not the range's total.
func TestRangePageStopsAtTheLimit(t *testing.T) {
	ts := newTestStore(t)
	for i := range 10 {
		if _, err := ts.put(fmt.Sprintf("k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	req := &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 3}
	full, err := ts.Range(req)
	if err != nil {
		t.Fatal(err)
	}
	page, err := ts.RangePage(req)
	if err != nil {
		t.Fatal(err)
	}
	if full.Count != 10 || !full.More || len(full.Kvs) != 3 {
		t.Fatalf("Range: count %d more %v kvs %d; want 10, true, 3", full.Count, full.More, len(full.Kvs))
	}
	if page.Count != 4 || !page.More || len(page.Kvs) != 3 {
		t.Fatalf("RangePage: count %d more %v kvs %d; want 4, true, 3", page.Count, page.More, len(page.Kvs))
	}
	for i := range page.Kvs {
		if string(page.Kvs[i].Key) != string(full.Kvs[i].Key) {
			t.Fatalf("RangePage key %d = %q, Range's = %q", i, page.Kvs[i].Key, full.Kvs[i].Key)
		}
	}
	last, err := ts.RangePage(&pb.RangeRequest{Key: []byte("k08"), RangeEnd: []byte("l"), Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if last.More || len(last.Kvs) != 2 {
		t.Fatalf("last page: more %v kvs %d; want false, 2", last.More, len(last.Kvs))
	}
}
