package auth

import "errors"

// The errors the state machine returns. Where a client can see one, its text
// is the one etcd's clients receive (rpctypes' description), so that clientv3
// maps it to the same typed error; the API layer turns each into the gRPC
// status listed in the package doc.
var (
	// ErrRootUserNotExist refuses AuthEnable while there is no user "root".
	ErrRootUserNotExist = errors.New("etcdserver: root user does not exist")
	// ErrRootRoleNotExist refuses AuthEnable while user "root" lacks role "root".
	ErrRootRoleNotExist = errors.New("etcdserver: root user does not have root role")
	// ErrUserAlreadyExist refuses UserAdd of a name that is taken.
	ErrUserAlreadyExist = errors.New("etcdserver: user name already exists")
	// ErrUserEmpty refuses UserAdd without a name, and a permission check
	// without a user (no token) while auth is enabled.
	ErrUserEmpty = errors.New("etcdserver: user name is empty")
	// ErrUserNotFound answers an operation on a user that does not exist.
	ErrUserNotFound = errors.New("etcdserver: user name not found")
	// ErrRoleAlreadyExist refuses RoleAdd of a name that is taken.
	ErrRoleAlreadyExist = errors.New("etcdserver: role name already exists")
	// ErrRoleNotFound answers an operation on a role that does not exist.
	ErrRoleNotFound = errors.New("etcdserver: role name not found")
	// ErrRoleEmpty refuses RoleAdd without a name.
	ErrRoleEmpty = errors.New("etcdserver: role name is empty")
	// ErrAuthFailed answers a wrong user name or password.
	ErrAuthFailed = errors.New("etcdserver: authentication failed, invalid user ID or password")
	// ErrPermissionNotGiven refuses RoleGrantPermission without a permission.
	ErrPermissionNotGiven = errors.New("etcdserver: permission not given")
	// ErrPermissionDenied refuses a request the user's roles do not allow.
	ErrPermissionDenied = errors.New("etcdserver: permission denied")
	// ErrRoleNotGranted refuses UserRevokeRole of a role the user lacks.
	ErrRoleNotGranted = errors.New("etcdserver: role is not granted to the user")
	// ErrPermissionNotGranted refuses RoleRevokePermission of a permission
	// (key and range end) the role lacks.
	ErrPermissionNotGranted = errors.New("etcdserver: permission is not granted to the role")
	// ErrAuthNotEnabled refuses Authenticate while auth is disabled.
	ErrAuthNotEnabled = errors.New("etcdserver: authentication is not enabled")
	// ErrInvalidAuthToken answers a token that is unknown, expired or forged.
	ErrInvalidAuthToken = errors.New("etcdserver: invalid auth token")
	// ErrInvalidAuthMgmt refuses deleting root, revoking root's root role
	// while auth is enabled, and granting an invalid key range.
	ErrInvalidAuthMgmt = errors.New("etcdserver: invalid auth management")
	// ErrAuthOldRevision refuses a request checked against an older auth
	// revision than the store's: the client retries with a fresh token.
	ErrAuthOldRevision = errors.New("etcdserver: revision of auth store is old")

	// ErrNoPasswordUser is etcd's answer (gRPC code Unknown, etcd's own
	// text) to a password for a user created without one, and to a hashed
	// password that is not valid base64.
	ErrNoPasswordUser = errors.New("auth: authentication failed, password was given for no password user")
	// ErrPlainPassword refuses a user request that reached apply with a
	// plaintext password: the API layer must hash it first (HashUserAdd,
	// HashChangePassword) so that every member applies the same bytes.
	ErrPlainPassword = errors.New("auth: password must be hashed before it is proposed")

	// ErrInvalidAuthOpts refuses a malformed --auth-token option string.
	ErrInvalidAuthOpts = errors.New("auth: invalid auth options")
	// ErrInvalidAuthMethod refuses a JWT sign-method the JWT library knows
	// but etcd does not accept ("none"); an unknown one is ErrInvalidAuthOpts.
	ErrInvalidAuthMethod = errors.New("auth: invalid auth signature method")
	// ErrMissingKey refuses a JWT option string that names no usable key.
	ErrMissingKey = errors.New("auth: missing key data")
	// ErrKeyMismatch refuses JWT public and private keys that are not a pair.
	ErrKeyMismatch = errors.New("auth: public and private keys don't match")
	// ErrVerifyOnly is Assign's answer when the JWT provider holds only a
	// public key: it verifies tokens but cannot sign them.
	ErrVerifyOnly = errors.New("auth: token signing attempted with verify-only key")
	// ErrBcryptCost refuses a bcrypt cost outside [bcrypt.MinCost, bcrypt.MaxCost].
	ErrBcryptCost = errors.New("auth: invalid bcrypt cost")
	// ErrCorrupt reports persisted auth state that does not decode.
	ErrCorrupt = errors.New("auth: corrupt persisted state")
)
