package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/coreos/go-semver/semver"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/membership"
)

func TestDecideClusterVersion(t *testing.T) {
	own := semver.New("3.7.3")
	for _, tc := range []struct {
		name, cur string
		d         membership.Downgrade
		minimal   *semver.Version // the lowest server version; own if nil and not unknown
		unknown   bool            // a member's version is not known
		want      string
		wantErr   bool
	}{
		{name: "undecided", cur: "", want: "3.7.0"},
		{name: "undecided, a member unknown", cur: "", unknown: true, want: "3.0.0"},
		{name: "undecided, an older member", cur: "", minimal: semver.New("3.6.9"), want: "3.6.0"},
		{name: "a member unknown", cur: "3.0.0", unknown: true, want: ""},
		{name: "an older member keeps it", cur: "3.6.0", minimal: semver.New("3.6.9"), want: ""},
		{name: "from etcd's minimum", cur: "3.0.0", want: "3.7.0"},
		{name: "downgrade waits for every member", cur: "3.7.0", unknown: true, d: membership.Downgrade{Enabled: true, TargetVersion: "3.6.0"}, want: ""},
		{name: "current", cur: "3.7.0", want: ""},
		{name: "older cluster upgrades", cur: "3.6.0", want: "3.7.0"},
		{name: "other major stays", cur: "2.3.0", want: ""},
		{name: "newer cluster stays", cur: "3.8.0", want: ""},
		{name: "downgrade lowers", cur: "3.7.0", d: membership.Downgrade{Enabled: true, TargetVersion: "3.6.0"}, want: "3.6.0"},
		{name: "downgrade done", cur: "3.6.0", d: membership.Downgrade{Enabled: true, TargetVersion: "3.6.0"}, want: ""},
		{name: "downgrade two minors", cur: "3.7.0", d: membership.Downgrade{Enabled: true, TargetVersion: "3.5.0"}, wantErr: true},
		{name: "cancelled downgrade raises", cur: "3.6.0", d: membership.Downgrade{}, want: "3.7.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			minimal := own
			if tc.minimal != nil {
				minimal = tc.minimal
			}
			if tc.unknown {
				minimal = nil
			}
			got, err := decideClusterVersion(tc.cur, tc.d, minimal)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("decide(%q, %+v) = %q, %v; want %q (error %v)", tc.cur, tc.d, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestDowngradeSequence runs etcd's downgrade sequence on one member:
// the cluster version is decided, validate and enable check the target,
// the cluster version follows the job down and back up after cancel, and
// the job survives a restart.
func TestDowngradeSequence(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, nil)
	ctx := context.Background()
	waitUntil(t, "the cluster version", func() bool { return s.ClusterVersion() == "3.7.0" })
	if sv := s.StorageVersion(); sv != "3.7.0" {
		t.Fatalf("storage version %q, want 3.7.0", sv)
	}

	do := func(action pb.DowngradeRequest_DowngradeAction, target string) (string, error) {
		t.Helper()
		resp, err := s.Downgrade(ctx, action, target)
		if err != nil {
			return "", err
		}
		return resp.Version, nil
	}
	for _, tc := range []struct {
		action  pb.DowngradeRequest_DowngradeAction
		target  string
		wantErr error
	}{
		{pb.DowngradeRequest_VALIDATE, "x.y", ErrWrongDowngradeVersionFormat},
		{pb.DowngradeRequest_VALIDATE, "3.5", ErrInvalidDowngradeTargetVersion},
		{pb.DowngradeRequest_VALIDATE, "3.7", ErrInvalidDowngradeTargetVersion},
		{pb.DowngradeRequest_ENABLE, "3.8.0", ErrInvalidDowngradeTargetVersion},
		{pb.DowngradeRequest_VALIDATE, "3.6", nil},
		{pb.DowngradeRequest_VALIDATE, "3.6.9", nil},
	} {
		v, err := do(tc.action, tc.target)
		if !errors.Is(err, tc.wantErr) || (err == nil && v != "3.7") {
			t.Fatalf("%v %q: %q, %v; want version 3.7 or %v", tc.action, tc.target, v, err, tc.wantErr)
		}
	}
	if s.DowngradeInfo().Enabled {
		t.Fatal("validate enabled a downgrade")
	}
	if v, err := do(pb.DowngradeRequest_ENABLE, "3.6"); err != nil || v != "3.7" {
		t.Fatalf("enable: %q, %v", v, err)
	}
	if d := s.DowngradeInfo(); d != (membership.Downgrade{Enabled: true, TargetVersion: "3.6.0"}) {
		t.Fatalf("downgrade info %+v", d)
	}
	waitUntil(t, "the downgraded cluster version", func() bool { return s.ClusterVersion() == "3.6.0" })
	if _, err := do(pb.DowngradeRequest_ENABLE, "3.5"); !errors.Is(err, ErrDowngradeInProcess) {
		t.Fatalf("second enable: %v, want %v", err, ErrDowngradeInProcess)
	}

	// The job and the lowered version are replicated state: a restart
	// finds them.
	s.Stop()
	s = startServer(t, dir, nil)
	if d := s.DowngradeInfo(); !d.Enabled || d.TargetVersion != "3.6.0" {
		t.Fatalf("after restart: downgrade info %+v", d)
	}
	if cv := s.ClusterVersion(); cv != "3.6.0" {
		t.Fatalf("after restart: cluster version %q", cv)
	}

	if _, err := do(pb.DowngradeRequest_CANCEL, ""); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if s.DowngradeInfo().Enabled {
		t.Fatal("cancel left the downgrade enabled")
	}
	waitUntil(t, "the cluster version back up", func() bool { return s.ClusterVersion() == "3.7.0" })
	// As in etcd, cancelling with no job in progress succeeds.
	if v, err := do(pb.DowngradeRequest_CANCEL, ""); err != nil || v != "3.7" {
		t.Fatalf("second cancel: %q, %v", v, err)
	}
}

// TestClusterVersionIsTheLowest: the leader asks every member for its
// server version over the peer network and sets the cluster version to the
// lowest, as etcd does; here one member answers as an etcd 3.6 server.
func TestClusterVersionIsTheLowest(t *testing.T) {
	ms := []*peerMember{listenPeer(t, "a"), listenPeer(t, "b")}
	initial := "a=" + ms[0].url + ",b=" + ms[1].url
	for i, m := range ms {
		m.cfg = peerConfig(t, m, initial)
		if i == 1 {
			// b answers as 3.6 only to others: a must lead, so b waits
			// far longer before it campaigns.
			m.cfg.ElectionTicks = 500
		}
		s, err := newServer(m.cfg, testingKnobs{})
		if err != nil {
			t.Fatal(err)
		}
		m.s = s
		h := s.PeerHandler()
		if i == 1 {
			old := h
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == peerVersionPath {
					w.Write([]byte(`{"etcdserver":"3.6.5","etcdcluster":"3.6.0","storage":"3.6.0"}`))
					return
				}
				old.ServeHTTP(w, r)
			})
		}
		m.hs = &http.Server{Handler: h}
		go m.hs.Serve(m.l)
		t.Cleanup(m.stop)
	}
	waitUntil(t, "a to lead", func() bool { return ms[0].s.Leader() == ms[0].s.MemberID() })
	for _, m := range ms {
		waitUntil(t, m.name+"'s cluster version", func() bool { return m.s.ClusterVersion() == "3.6.0" })
	}
	// The members' own /version on the peer listener.
	resp, err := http.Get(ms[0].url + peerVersionPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var vs map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&vs); err != nil || vs["etcdserver"] != ServerVersion || vs["etcdcluster"] != "3.6.0" {
		t.Fatalf("peer /version: %v %v", vs, err)
	}
}
