package api

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// fakeAuth is the fake backend's auth: disabled, so every check passes,
// and the Auth RPCs answer codes.Unimplemented.
type fakeAuth struct {
	pb.UnimplementedAuthServer
}

func (fakeAuth) IsAdmin(context.Context) error     { return nil }
func (fakeAuth) RequireUser(context.Context) error { return nil }

func (fakeAuth) WatchPermitted(context.Context, []byte, []byte) error { return nil }
