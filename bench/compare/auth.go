package main

import (
	"context"
	"fmt"
	"path/filepath"
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
// linearizable range with 100 clients, first on a fresh member with auth
// off, then on another fresh member with auth on and every connection
// logged in as a non-root user, the order swapped on odd rounds. Its rows
// are both runs and, per server, the auth-on/auth-off ratio of each
// throughput and of the server's CPU per request (issue 12's target: a
// throughput ratio of at least 0.9).
func authPhase(o *options, res *results, col, round int, name, serverBin, benchBin, dir string) error {
	modes := []bool{false, true}
	if round%2 == 1 {
		modes = []bool{true, false}
	}
	got := map[bool]map[string]float64{}
	for _, on := range modes {
		label := "auth off"
		if on {
			label = "auth on"
		}
		logf("%s: starting a fresh member, %s", name, label)
		figs, err := authRun(o, res, col, name, serverBin, benchBin, filepath.Join(dir, strings.ReplaceAll(label, " ", "-")), on)
		if err != nil {
			return err
		}
		got[on] = figs
	}
	for _, f := range authWorkloads(o) {
		for _, fig := range []string{f.label + ": throughput", f.label + ": server CPU per request"} {
			if off, on := got[false][fig], got[true][fig]; off > 0 && on > 0 {
				res.set("auth on/off: "+fig, "x", col, on/off)
			}
		}
	}
	return nil
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

// authRun runs the auth workloads on a fresh member, with auth enabled
// (and the bench logged in) when on, and returns each workload's
// throughput and server CPU per request, keyed by figure.
func authRun(o *options, res *results, col int, name, serverBin, benchBin, dir string, on bool) (map[string]float64, error) {
	// Each connection logs in before its run (bcrypt at the server's
	// cost, ten connections); at cost 4 that is well under a
	// millisecond, not the 0.5 s of CPU that cost 10 takes ten logins to,
	// which the server CPU figure would otherwise count.
	flags := append([]string{"--bcrypt-cost", "4"}, o.serverFlags...)
	ms, err := startCluster(serverBin, dir, 1, flags)
	if err != nil {
		return nil, err
	}
	defer stopMembers(ms)
	m := ms[0]
	if err := putKey(m.clientURL, rangeKey, 256); err != nil {
		return nil, fmt.Errorf("put %s: %w", rangeKey, err)
	}
	mode := "auth off"
	var user []string
	if on {
		mode = "auth on"
		if err := enableAuth(m.clientURL); err != nil {
			return nil, fmt.Errorf("enable auth: %w", err)
		}
		user = []string{"--user", authUser + ":" + authPassword}
	}
	bc := &benchClient{bin: benchBin, endpoints: []string{m.clientURL}, verbose: o.verbose}
	figs := map[string]float64{}
	for _, f := range authWorkloads(o) {
		f.label = mode + ": " + f.label
		base := f.label[len(mode)+2:]
		before, cerr := m.cpuTime()
		r, clientCPU, err := bc.runCPU(append(f.args, user...)...)
		res.record(col, name, f, r, err)
		after, cerr2 := m.cpuTime()
		if err != nil || r.Requests == 0 {
			continue
		}
		figs[base+": throughput"] = r.RequestsPerSecond
		if cerr == nil && cerr2 == nil {
			res.recordCPU(col, f, after-before, clientCPU, r.Requests)
			figs[base+": server CPU per request"] = (after - before).Seconds() / float64(r.Requests)
		}
	}
	return figs, nil
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
