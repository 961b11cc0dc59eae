package crashpoint

import (
	"testing"

	"github.com/cairn-db/cairn/tests/kit/proc"
)

// TestMain lets the process test (TestRaftLogFullDeviceProcess) run this
// test binary again as a cairn member (tests/kit/proc).
func TestMain(m *testing.M) { proc.Main(m) }
