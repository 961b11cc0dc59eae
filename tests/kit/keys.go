package kit

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// readTimeout bounds one read WaitKeys makes.
const readTimeout = 10 * time.Second

// WaitKeys waits until exactly n keys exist under prefix as c reads them
// (linearizably), such as the waiters queued on a lock or an election. It
// fails the test at once if a read fails, and if the count is not n within
// WaitTimeout. Call it from the test's goroutine.
func WaitKeys(t testing.TB, c *clientv3.Client, prefix string, n int64) {
	t.Helper()
	WaitForNil(t, fmt.Sprintf("%d keys under %q", n, prefix), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		defer cancel()
		resp, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatalf("count the keys under %q: %v", prefix, err)
		}
		if resp.Count != n {
			return fmt.Errorf("%d keys", resp.Count)
		}
		return nil
	})
}
