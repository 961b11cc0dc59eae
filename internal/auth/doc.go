// Package auth is cairn's auth state machine: users, roles, key permissions,
// the enabled flag and the auth revision, with etcd 3.7's semantics and
// errors, and the tokens (simple, JWT) that name a request's user. It knows
// nothing of raft or gRPC: the server applies decoded requests
// (etcdserverpb's Auth requests) in log order and the API layer asks it
// permission questions.
//
// # Model
//
// A user has a name, a bcrypt hash of their password (or none, with
// Options.NoPassword) and a sorted set of role names. A role has a name and a
// list of permissions; each permission is READ, WRITE or READWRITE on
//
//	one key        key="k",  range_end=""      → [k, k+"\x00")
//	a range        key="a",  range_end="b"     → [a, b)
//	a prefix       key="p",  range_end="q"     → [p, q)  (a range like any other)
//	from a key on  key="k",  range_end="\x00"  → [k, +∞)
//
// A request on [key, range_end) is permitted when the union of the user's
// permissions of the right kind covers it wholly: two roles granting [a, c)
// and [c, e) together permit [b, d). READWRITE counts as both. A request
// whose range_end is at or below its key names no key and is judged by its
// key alone. The user holding role root may do anything, whatever role root
// was granted (RoleGet shows READWRITE on every key for it).
//
// # Invariants
//
//   - The auth revision starts at 1 and grows by one with every apply that
//     changes a user or a role, and with AuthDisable; AuthEnable and the
//     refused or no-op operations leave it. A request checked at an older
//     revision than the store's is refused (ErrAuthOldRevision), which is
//     how a change of permissions overtakes requests already checked.
//   - While auth is enabled, user root exists and holds role root: deleting
//     either, or revoking one from the other, is ErrInvalidAuthMgmt.
//     AuthEnable requires the same (ErrRootUserNotExist, ErrRootRoleNotExist).
//   - A user's roles are sorted and unique; a role name in them may name a
//     role that does not exist (root, granted before it was created), which
//     grants nothing.
//   - Apply is deterministic: passwords arrive hashed (HashUserAdd and
//     HashChangePassword run on the API path, at --bcrypt-cost), so every
//     member writes the same bytes; a plaintext password at apply is
//     ErrPlainPassword.
//   - Each user's merged permissions (sorted disjoint intervals, one set for
//     reading and one for writing) are cached for the current revision, so
//     a check is a map lookup and a binary search.
//
// # Using it
//
// The apply loop calls the methods that take a Writer, one at a time, in log
// order, with the batch that also records the applied index, after the
// checks etcd's apply makes: NeedsAdmin(r) ⇒ IsAdminPermitted, CanGetUser
// before UserGet, CanGetRole before RoleGet, and the key checks
// (IsRangePermitted, IsPutPermitted, IsDeleteRangePermitted) against the
// request header's user and auth revision. A Writer error leaves the
// in-memory state as it was; the batch must then be discarded and the member
// stopped. Authenticate runs in two steps: CheckPassword on the API path
// (bcrypt is slow) and TokenProvider.NewPrefix for the proposal, then the
// entry's Authenticate at apply, which issues the token through the
// TokenProvider. The API layer resolves a request's token with TokenInfo
// (nil while auth is disabled) and stamps the user and revision into the
// proposal's header, which apply checks again. Queries and checks are safe
// to call concurrently with apply.
//
// # On-disk form
//
// All keys live in storage's 'a' keyspace (KeyPrefix):
//
//	a/enabled      1 byte: 0x00 disabled, 0x01 enabled
//	a/revision     8 bytes, big endian
//	a/role/<name>  authpb.Role, protobuf (deterministic marshal)
//	a/user/<name>  authpb.User, protobuf; Password is the raw bcrypt hash
//
// A missing a/enabled or a/revision means disabled and revision 1. Each
// apply writes only the keys it changes (a role deletion rewrites the users
// that held it); Save writes all of them and Load reads them back into the
// same state. ReadState and State.Put do the same with the state as plain
// values (KeyRange bounds the keys), which is how backups (package
// etcdbackup) carry users and roles to etcd's format and back.
//
// # Errors
//
// Client-visible errors carry etcd's texts; the API layer maps them to gRPC
// statuses as etcd does (rpctypes.ErrGRPC…):
//
//	ErrRootUserNotExist, ErrRootRoleNotExist, ErrUserAlreadyExist,
//	ErrUserNotFound, ErrRoleAlreadyExist, ErrRoleNotFound,
//	ErrRoleNotGranted, ErrPermissionNotGranted,
//	ErrAuthNotEnabled                            FailedPrecondition
//	ErrUserEmpty, ErrRoleEmpty, ErrAuthFailed, ErrPermissionNotGiven,
//	ErrInvalidAuthMgmt, ErrAuthOldRevision       InvalidArgument
//	ErrPermissionDenied                          PermissionDenied
//	ErrInvalidAuthToken                          Unauthenticated
//	ErrNoPasswordUser                            Unknown (etcd's own text)
//
// ErrPlainPassword, ErrCorrupt and the token configuration errors
// (ErrInvalidAuthOpts, ErrInvalidAuthMethod, ErrMissingKey, ErrKeyMismatch,
// ErrBcryptCost) are cairn's and never reach a client from a correct server;
// ErrVerifyOnly is Authenticate's answer on a verify-only JWT member.
//
// # Tokens
//
// NewTokenProvider parses etcd's --auth-token string. A simple token is
// "<16 random letters>.<raft index>": the API layer draws the letters
// (NewPrefix) and proposes them, and every member that applies the entry
// learns the token, which lives until --auth-token-ttl passes without a use.
// A JWT carries the user and the auth revision it was issued at, signed with
// RS*, PS*, ES*, EdDSA or HS*; a member with only the public key verifies
// but does not issue. A JWT's signature is verified on its first use only;
// the member then remembers the token (at most 4096 of them) and checks
// only its expiry. Either kind is resolved without an exclusive lock: it
// is on the path of every request a logged-in client makes. Time comes
// from TokenConfig.Now.
package auth
