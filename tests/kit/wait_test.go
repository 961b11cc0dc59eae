package kit

import (
	"errors"
	"testing"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	err := Poll(time.Minute, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls; want nil after 3", err, calls)
	}
}

func TestPollReportsTheLastErrorAtTheDeadline(t *testing.T) {
	last := errors.New("still not")
	err := Poll(10*time.Millisecond, func() error { return last })
	if !errors.Is(err, last) {
		t.Fatalf("Poll = %v; want an error wrapping %v", err, last)
	}
}
