package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-semver/semver"
	"go.etcd.io/etcd/api/v3/version"
)

// peerVersionPath is where a member serves its versions on the peer
// listener, etcd's /version document, as etcd's peers serve it: the leader
// asks every member for its server version there.
const peerVersionPath = "/version"

// peerVersionTimeout bounds one member's answer to the leader.
const peerVersionTimeout = 2 * time.Second

// serveVersion answers GET /version on the peer listener.
func (v *versionKeeper) serveVersion(w http.ResponseWriter, _ *http.Request) {
	vs := version.Versions{Server: ServerVersion, Cluster: "not_decided", Storage: "unknown"}
	if cv := v.cluster(); cv != "" {
		vs.Cluster, vs.Storage = cv, cv
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(vs)
}

// membersServerVersions returns every member's server version: this
// member's own, the others' asked over the peer network. ok is false if a
// member did not answer (it may be down, or not started yet): the leader
// then leaves the cluster version alone, as etcd does.
func (v *versionKeeper) membersServerVersions(ctx context.Context) (vers []*semver.Version, ok bool) {
	s := v.s
	c := peerClient(s.cfg)
	for _, m := range s.members.all() {
		if m.ID == s.memberID {
			vers = append(vers, semver.New(ServerVersion))
			continue
		}
		mv, err := fetchServerVersion(ctx, c, m.PeerURLs)
		if err != nil {
			s.lg.Debug("cannot get a member's server version", "member-id", fmt.Sprintf("%x", m.ID), "err", err)
			return nil, false
		}
		vers = append(vers, mv)
	}
	return vers, true
}

// fetchServerVersion asks the member at urls, in turn, for its server
// version.
func fetchServerVersion(ctx context.Context, c *http.Client, urls []string) (*semver.Version, error) {
	var last error = fmt.Errorf("no peer URLs")
	for _, u := range urls {
		sv, err := func() (*semver.Version, error) {
			ctx, cancel := context.WithTimeout(ctx, peerVersionTimeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(u, "/")+peerVersionPath, nil)
			if err != nil {
				return nil, err
			}
			resp, err := c.Do(req)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			if err != nil {
				return nil, err
			}
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("%s", resp.Status)
			}
			var vs version.Versions
			if err := json.Unmarshal(body, &vs); err != nil {
				return nil, err
			}
			return semver.NewVersion(vs.Server)
		}()
		if err == nil {
			return sv, nil
		}
		last = fmt.Errorf("%s: %w", u, err)
	}
	return nil, last
}

// minVersion returns the lowest of vers, nil if vers is empty.
func minVersion(vers []*semver.Version) *semver.Version {
	var lo *semver.Version
	for _, v := range vers {
		if lo == nil || v.LessThan(*lo) {
			lo = v
		}
	}
	return lo
}

// allAt reports whether every version in vers has target's major.minor.
func allAt(vers []*semver.Version, target *semver.Version) bool {
	for _, v := range vers {
		if !majorMinor(v).Equal(*majorMinor(target)) {
			return false
		}
	}
	return len(vers) > 0
}
