package api

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// authService is etcd's Auth service as cairn serves it today: every call
// (Authenticate, AuthEnable, UserAdd, RoleGrantPermission, ...) answers
// codes.Unimplemented, because cairn has no users, roles or tokens yet.
// This is the one place that says so; NewGRPCServer registers it on every
// server, and a member with auth will serve the service here instead.
type authService struct {
	pb.UnimplementedAuthServer
}
