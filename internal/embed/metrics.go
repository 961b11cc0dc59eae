package embed

import (
	"os"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// fdGauges are etcd's os_fd_used and os_fd_limit: the process's open file
// descriptors and its limit (RLIMIT_NOFILE), read when scraped. Like the
// process collector's, they are the process's, so they go only on a
// registry of the member's own. Where /proc is missing (not Linux), they
// are left out.
func fdGauges() []prometheus.Collector {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		return nil
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "os", Subsystem: "fd", Name: "used",
			Help: "The number of used file descriptors.",
		}, func() float64 {
			fds, err := os.ReadDir("/proc/self/fd")
			if err != nil {
				return 0
			}
			return float64(len(fds))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "os", Subsystem: "fd", Name: "limit",
			Help: "The file descriptor limit.",
		}, func() float64 {
			var rl syscall.Rlimit
			if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
				return 0
			}
			return float64(rl.Cur)
		}),
	}
}
