package watch

import (
	"math/rand/v2"
	"time"
)

// jitter adds up to a tenth of d at random, as etcd does, so streams
// created together do not all send their progress notifications at once.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}
