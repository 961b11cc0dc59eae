// Package trailer streams a body followed by its digest: the layout of a
// backup file in etcd's format (a bbolt database, then its sha256) and in
// cairn's own. Both writers stream the file without holding it in memory,
// so the digest is computed as the body goes by and appended at its end.
package trailer

import (
	"hash"
	"io"
)

// WithDigest returns a reader that yields what body yields, then h's sum
// of those bytes. h must be fresh; the reader is not safe for concurrent
// use.
func WithDigest(body io.Reader, h hash.Hash) io.Reader {
	return &reader{body: body, h: h}
}

type reader struct {
	body   io.Reader
	h      hash.Hash
	digest []byte // set once the body has ended; drained by Read
}

func (r *reader) Read(p []byte) (int, error) {
	if r.digest == nil {
		n, err := r.body.Read(p)
		r.h.Write(p[:n])
		if err == io.EOF {
			r.digest = r.h.Sum(nil)
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	if len(r.digest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.digest)
	r.digest = r.digest[n:]
	return n, nil
}
