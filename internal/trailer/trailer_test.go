package trailer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// TestWithDigest reads the stream one byte at a time and all at once: the
// body, then exactly its sha256, then EOF; and a body's read error is
// passed on, not turned into a digest.
func TestWithDigest(t *testing.T) {
	body := bytes.Repeat([]byte("cairn"), 1000)
	sum := sha256.Sum256(body)
	want := append(append([]byte{}, body...), sum[:]...)
	for name, r := range map[string]io.Reader{
		"one byte at a time": iotest.OneByteReader(WithDigest(bytes.NewReader(body), sha256.New())),
		"whole":              WithDigest(bytes.NewReader(body), sha256.New()),
		"empty body":         nil,
	} {
		w := want
		if r == nil {
			e := sha256.Sum256(nil)
			r, w = WithDigest(bytes.NewReader(nil), sha256.New()), e[:]
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, w) {
			t.Fatalf("%s: got %d bytes (%v), want %d bytes of body and digest", name, len(got), err, len(w))
		}
	}
	boom := errors.New("boom")
	if _, err := io.ReadAll(WithDigest(iotest.ErrReader(boom), sha256.New())); !errors.Is(err, boom) {
		t.Fatalf("body error: got %v, want %v", err, boom)
	}
}
