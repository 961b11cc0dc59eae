package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The auth phase's user: a non-root user whose one role grants readwrite
// on authPrefix, where the workloads write (put keys and rangeKey).
const (
	authPrefix   = "compare/"
	authUser     = "bench"
	authPassword = "benchpw"
	authRole     = "bench"
	rootPassword = "rootpw"
)

// authPhase measures what enabling auth costs a server: put and
// linearizable range with 100 clients on two fresh members started side
// by side, one with auth off and one with auth on and every connection
// logged in as a non-root user. Each workload runs on one member right
// after the other (off first on even rounds, on first on odd ones), so
// that the load other processes put on the machine drifts as little as
// possible between the two runs of a pair. Its rows are both runs and, per
// server, the auth-on/auth-off ratio of each throughput and of the
// server's CPU per request (issue 12's target: a throughput ratio of at
// least 0.9).
func authPhase(o *options, res *results, col, round int, name, serverBin, benchBin, dir string) error {
	logf("%s: starting two fresh members, auth off and auth on", name)
	// Each connection logs in before its run (bcrypt at the server's
	// cost, ten connections); at cost 4 that is well under a
	// millisecond, not the 0.5 s of CPU that ten logins take at cost 10,
	// which the server CPU figure would otherwise count.
	flags := append([]string{"--bcrypt-cost", "4"}, o.serverFlags...)
	members := map[bool]*member{}
	for _, on := range []bool{false, true} {
		ms, err := startCluster(serverBin, filepath.Join(dir, strings.ReplaceAll(authMode(on), " ", "-")), 1, flags)
		if err != nil {
			return err
		}
		defer stopMembers(ms)
		m := ms[0]
		if err := putKey(m.clientURL, rangeKey, 256); err != nil {
			return fmt.Errorf("put %s: %w", rangeKey, err)
		}
		if on {
			if err := enableAuth(m.clientURL); err != nil {
				return fmt.Errorf("enable auth: %w", err)
			}
		}
		members[on] = m
	}
	modes := []bool{false, true}
	if round%2 == 1 {
		modes = []bool{true, false}
	}
	for _, f := range authWorkloads(o) {
		got := map[bool]map[string]float64{}
		for _, on := range modes {
			got[on] = authRun(o, res, col, name, benchBin, members[on], on, f)
		}
		for _, fig := range []string{"throughput", "server CPU per request"} {
			if off, on := got[false][fig], got[true][fig]; off > 0 && on > 0 {
				res.set("auth on/off: "+f.label+": "+fig, "x", col, on/off)
			}
		}
	}
	return nil
}

func authMode(on bool) string {
	if on {
		return "auth on"
	}
	return "auth off"
}

// authWorkloads are the auth phase's figures: name and `cairn bench`
// arguments, without the user.
func authWorkloads(o *options) []figureSet {
	limit := []string{"--duration", o.maxTime.String(), "--request-timeout", "30s", "--clients", "100", "--conns", "10"}
	return []figureSet{
		{label: "put, 100 clients", throughput: true, p99: true,
			args: append([]string{"put", "--total", itoa(o.requests), "--val-size", "256",
				"--key-space-size", "100000", "--key-prefix", authPrefix}, limit...)},
		{label: "range linearizable, 100 clients", throughput: true, p99: true,
			args: append([]string{"range", rangeKey, "--consistency", "l", "--total", itoa(o.requests * 2)}, limit...)},
	}
}

// authRun runs workload f on m, logged in as the phase's user when on, and
// returns its throughput and the server's CPU seconds per request (keys
// "throughput", "server CPU per request"; missing if the run failed).
func authRun(o *options, res *results, col int, name, benchBin string, m *member, on bool, f figureSet) map[string]float64 {
	args := f.args
	if on {
		args = append(slices.Clip(args), "--user", authUser+":"+authPassword)
	}
	f.label = authMode(on) + ": " + f.label
	bc := &benchClient{bin: benchBin, endpoints: []string{m.clientURL}, verbose: o.verbose}
	before, cerr := m.cpuTime()
	r, clientCPU, err := bc.runCPU(args...)
	res.record(col, name, f, r, err)
	after, cerr2 := m.cpuTime()
	figs := map[string]float64{}
	if err != nil || r.Requests == 0 {
		return figs
	}
	figs["throughput"] = r.RequestsPerSecond
	if cerr == nil && cerr2 == nil {
		res.recordCPU(col, f, after-before, clientCPU, r.Requests)
		figs["server CPU per request"] = (after - before).Seconds() / float64(r.Requests)
	}
	return figs
}

// enableAuth sets up what the auth phase runs as, the etcdctl sequence of
// README's Auth section: user root with role root, role bench with
// readwrite on authPrefix, user bench holding it; then enables auth.
func enableAuth(endpoint string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop(), DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	steps := []struct {
		what string
		do   func() error
	}{
		{"user add root", func() error { _, err := cli.UserAdd(ctx, "root", rootPassword); return err }},
		{"role add root", func() error { _, err := cli.RoleAdd(ctx, "root"); return err }},
		{"user grant-role root root", func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err }},
		{"role add " + authRole, func() error { _, err := cli.RoleAdd(ctx, authRole); return err }},
		{"role grant-permission " + authRole + " --prefix readwrite " + authPrefix, func() error {
			_, err := cli.RoleGrantPermission(ctx, authRole, authPrefix, clientv3.GetPrefixRangeEnd(authPrefix),
				clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"user add " + authUser, func() error { _, err := cli.UserAdd(ctx, authUser, authPassword); return err }},
		{"user grant-role " + authUser + " " + authRole, func() error {
			_, err := cli.UserGrantRole(ctx, authUser, authRole)
			return err
		}},
		{"auth enable", func() error { _, err := cli.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}
