package auth

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestChecksDuringApply runs permission checks and queries while one
// goroutine applies grants and revocations (run it with -race). Every answer
// must be one a serial order could give: permitted, refused, or outdated.
func TestChecksDuringApply(t *testing.T) {
	f := newFixture(t)
	f.addUser("root", "root")
	f.addUser("u", "r")
	f.enable()

	var wg sync.WaitGroup
	stop := make(chan struct{})
	errc := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ai := AuthInfo{"u", f.s.Revision()}
				err := f.s.IsRangePermitted(ai, []byte(fmt.Sprintf("k%d", i%10)), nil)
				if err != nil && !errors.Is(err, ErrPermissionDenied) && !errors.Is(err, ErrAuthOldRevision) {
					errc <- fmt.Errorf("worker %d: %v", w, err)
					return
				}
				if _, err := f.s.RoleGet(&pb.AuthRoleGetRequest{Role: "r"}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for i := range 500 {
		p := permission(authpb.READ, fmt.Sprintf("k%d", i%10), "")
		f.grant("r", p)
		f.ok(f.s.RoleRevokePermission(f.kv, &pb.AuthRoleRevokePermissionRequest{Role: "r", Key: p.Key}))
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}

// BenchmarkIsRangePermitted measures a check that hits the per-user cache:
// the price every request pays with auth enabled.
func BenchmarkIsRangePermitted(b *testing.B) {
	f := &fixture{s: New(Options{}), kv: memKV{}}
	f.s.UserAdd(f.kv, &pb.AuthUserAddRequest{Name: "root", Options: &authpb.UserAddOptions{NoPassword: true}})
	f.s.UserGrantRole(f.kv, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
	f.s.UserAdd(f.kv, &pb.AuthUserAddRequest{Name: "u", Options: &authpb.UserAddOptions{NoPassword: true}})
	for r := range 10 {
		name := fmt.Sprintf("r%d", r)
		f.s.RoleAdd(f.kv, &pb.AuthRoleAddRequest{Name: name})
		f.s.UserGrantRole(f.kv, &pb.AuthUserGrantRoleRequest{User: "u", Role: name})
		for k := range 100 {
			f.s.RoleGrantPermission(f.kv, &pb.AuthRoleGrantPermissionRequest{Name: name,
				Perm: permission(authpb.READ, fmt.Sprintf("/%d/%03d/", r, k), fmt.Sprintf("/%d/%03d0", r, k))})
		}
	}
	f.s.AuthEnable(f.kv, &pb.AuthEnableRequest{})
	ai := AuthInfo{"u", f.s.Revision()}
	key, end := []byte("/5/050/a"), []byte("/5/050/z")
	if err := f.s.IsRangePermitted(ai, key, end); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := f.s.IsRangePermitted(ai, key, end); err != nil {
				b.Fatal(err)
			}
		}
	})
}
