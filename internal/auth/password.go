package auth

import (
	"encoding/base64"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/crypto/bcrypt"
)

// DefaultBcryptCost is the cost of password hashing when --bcrypt-cost is
// not given (etcd's default, bcrypt's DefaultCost).
const DefaultBcryptCost = bcrypt.DefaultCost

// HashPassword returns the base64 form of password's bcrypt hash at cost,
// the form AuthUserAddRequest.HashedPassword carries. It refuses a cost
// outside [bcrypt.MinCost, bcrypt.MaxCost] with ErrBcryptCost. Hashing is
// slow by design: call it on the API path, never inside apply.
func HashPassword(password string, cost int) (string, error) {
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return "", fmt.Errorf("%w: %d (want %d..%d)", ErrBcryptCost, cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h), nil
}

// HashUserAdd prepares r for proposing, as etcd's server does: unless the
// user is to have no password, it replaces r.Password by r.HashedPassword.
// The request then carries no plaintext into the raft log.
func HashUserAdd(r *pb.AuthUserAddRequest, cost int) error {
	if r.Options != nil && r.Options.NoPassword {
		return nil
	}
	h, err := HashPassword(r.Password, cost)
	if err != nil {
		return err
	}
	r.HashedPassword, r.Password = h, ""
	return nil
}

// HashChangePassword prepares r for proposing: a non-empty r.Password
// becomes r.HashedPassword. An empty one is left as is, and apply then
// stores an empty hash that no password matches (etcd's behaviour).
func HashChangePassword(r *pb.AuthUserChangePasswordRequest, cost int) error {
	if r.Password == "" {
		return nil
	}
	h, err := HashPassword(r.Password, cost)
	if err != nil {
		return err
	}
	r.HashedPassword, r.Password = h, ""
	return nil
}
