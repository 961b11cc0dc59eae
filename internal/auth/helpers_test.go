package auth

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
)

// memKV is an in-memory Writer and Reader: the persisted form of a Store.
type memKV map[string][]byte

func (m memKV) Put(key, value []byte) error {
	m[string(key)] = bytes.Clone(value)
	return nil
}

func (m memKV) Delete(key []byte) error {
	delete(m, string(key))
	return nil
}

func (m memKV) Scan(prefix []byte, fn func(key, value []byte) error) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		if strings.HasPrefix(k, string(prefix)) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn([]byte(k), m[k]); err != nil {
			return err
		}
	}
	return nil
}

// failingWriter fails every write after the first n.
type failingWriter struct {
	n   int
	err error
}

func (f *failingWriter) Put(key, value []byte) error { return f.write() }
func (f *failingWriter) Delete(key []byte) error     { return f.write() }
func (f *failingWriter) write() error {
	if f.n == 0 {
		return f.err
	}
	f.n--
	return nil
}

var errDisk = errors.New("disk on fire")

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// mustHash hashes password at bcrypt's lowest cost, for speed.
func mustHash(t testing.TB, password string) string {
	t.Helper()
	h, err := HashPassword(password, 4)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func permission(typ authpb.Permission_Type, key, end string) *authpb.Permission {
	return &authpb.Permission{PermType: typ, Key: []byte(key), RangeEnd: []byte(end)}
}
