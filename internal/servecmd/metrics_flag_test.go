package servecmd

import "testing"

// TestMetricsFlag checks etcd's --metrics: "extensive" turns on the gRPC
// handling-time histograms; anything else is basic, as in etcd, and the
// flag is implemented (no warning).
func TestMetricsFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--metrics", "basic"}, false},
		{[]string{"--metrics", "extensive"}, true},
		{[]string{"--metrics=other"}, false},
	} {
		cfg, warnings, err := parse(t, c.args)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if len(warnings) != 0 {
			t.Errorf("%v: warnings %v", c.args, warnings)
		}
		if cfg.ExtensiveMetrics != c.want {
			t.Errorf("%v: ExtensiveMetrics %v, want %v", c.args, cfg.ExtensiveMetrics, c.want)
		}
	}
}
