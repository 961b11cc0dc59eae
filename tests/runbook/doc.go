// Package runbook runs operators' runbooks the way operators run them: with
// the real etcdctl and etcdutl (go.mod's tool dependencies, built by
// `go tool -n`, which keeps them in the build cache) and cairn's own
// `cairn snapshot restore` (cmd/cairn, built by the test) against real
// cairn processes, and where a runbook starts or ends on etcd, a real etcd
// process. The members are the test binary run again as cairn or etcd
// (tests/kit/proc), so the result depends on the server code the test was
// built from.
//
// TestNoSpaceRunbook is etcd's runbook for NOSPACE against a member with a
// 2 MiB --quota-backend-bytes: etcdctl put until it fails with
// "etcdserver: mvcc: database space exceeded", etcdctl alarm list shows
// NOSPACE; del --prefix, compaction --physical, defrag and alarm disarm;
// then put succeeds and no alarm is left. TestNoSpaceClearsItself is the
// same without the disarm (README "Space"): the alarm must leave
// etcdctl alarm list on its own and puts succeed.
//
// TestFullDisk puts a member's data directory on a 64 MiB tmpfs (with a
// quota far above it, so the device fills first), writes until the member
// refuses writes, recording every acknowledged one, kills it, fills what is
// left of the device (and keeps taking what frees up, as another writer
// would) and restarts it: it must exit with a non-zero status and a message
// naming its data directory and the remedy, or, if it still won the space
// its start freed (the killed process's failed tables are deleted), serve
// every acknowledged write; it must never hang. Then the tmpfs grows
// to 256 MiB and the member restarts: every acknowledged write is there
// (etcdctl get) and etcdctl put succeeds again once the NOSPACE alarm has
// cleared itself. Mounting needs root: the test is skipped where it cannot
// mount, and fails on CI (CI=true).
//
// TestMoveFromEtcdAndBack (issue 13) moves a keyspace of Kubernetes-like
// keys under /registry/ (rewritten, deleted and leased ones among them)
// from an etcd process to a 3-member cairn cluster with etcdctl snapshot
// save and three cairn snapshot restore runs, and checks with etcdctl on
// every member: the keys, values, create and mod revisions, versions and
// leases, the store revision, lease list and lease timetolive --keys, and
// endpoint hashkv equal across the members. Then it moves back, etcdctl
// snapshot save from cairn and etcdutl snapshot restore, and checks an etcd
// process on the result the same way.
//
// TestAuthRunbook (issue 12) runs README's Auth section with etcdctl
// against a cairn member (with --audit-log) and an etcd member: users and
// roles, grant-permission in its --prefix and range forms, auth enable,
// `etcdctl --user` puts and gets allowed and refused, a wrong password,
// revoke-permission, auth status and disable. Every step's output must be
// etcd's; cairn's audit log must hold the refused put and the changes.
//
// TestDowngradeRunbook (issue 13) runs etcdctl downgrade validate, enable
// and cancel against a cairn member and an etcd member, refusals
// included, and compares etcdctl's output and the version fields: GET
// /version (etcdserver, etcdcluster, storage) and etcdctl endpoint status
// -w json's storageVersion, before, during (the cluster and storage
// versions go down to the target) and after the cancel.
//
// Running it:
//
//	go test ./tests/runbook/            # every test at full size (~1-2 min once the tools are built)
//	go test -short ./tests/runbook/     # 600 keys moved instead of 3000
//	go test -run TestFullDisk -v ./tests/runbook/   # as root, for the tmpfs
//
// Each process's output is kept in the test's temporary directory and its
// tail printed when a check fails.
package runbook
