package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-db/cairn/internal/mvcc"
)

// Corruption detection compares the members' HashKV, as etcd does, in
// three ways:
//
//   - At start (Config.InitialCorruptCheck), before raft runs, a
//     restarting member asks every peer for the hash at its own revision;
//     a peer with the same compaction revision and another hash makes it
//     refuse to start (ErrInitialCorruptCheck). Peers it cannot reach, or
//     that are behind, are only logged.
//   - Periodically (Config.CorruptCheckTime) the leader hashes its store,
//     asks every follower for the hash at that revision, and raises the
//     CORRUPT alarm, through raft, naming a follower whose hash differs at
//     the same compaction revision or that is ahead of the leader.
//   - Periodically (Config.CompactHashCheckTime) the leader compares the
//     hashes the members kept when they scheduled the same compaction
//     (mvcc.Store.CompactionHashRevs), newest first, until one revision is
//     checked on the whole cluster; members outside the majority's hash get
//     the alarm (member 0 when no hash has a majority).
//
// Peers answer over the peer listener (peerHashKVPath). With a CORRUPT
// alarm raised, every member refuses the requests that change the
// keyspace or the leases with ErrCorrupt, as etcd does.

// ErrCorrupt is what writes get while a CORRUPT alarm is raised (etcd's
// text).
var ErrCorrupt = errors.New("etcdserver: corrupt cluster")

// ErrInitialCorruptCheck is returned (wrapped, naming the member) by New
// when the initial corruption check finds a peer whose hash differs.
var ErrInitialCorruptCheck = errors.New("found data inconsistency with peers")

// peerHashKVPath is where a member answers its peers' HashKV requests:
// POST with the revision as the "rev" query parameter.
const peerHashKVPath = "/members/hashkv"

// errPeerClusterID is a peer's refusal of a hash request from another
// cluster.
var errPeerClusterID = errors.New("server: the peer belongs to another cluster")

// refusedWhenCorrupt reports whether r is one of the requests etcd refuses
// with ErrCorrupt while a CORRUPT alarm is raised.
func refusedWhenCorrupt(r *pb.InternalRaftRequest) bool {
	return r.Put != nil || r.DeleteRange != nil || r.Txn != nil || r.Compaction != nil ||
		r.LeaseGrant != nil || r.LeaseRevoke != nil || r.Range != nil
}

// corrupt reports whether a CORRUPT alarm is raised.
func (a *alarmSet) corrupt() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for al := range a.set {
		if al.Type == int32(pb.AlarmType_CORRUPT) {
			return true
		}
	}
	return false
}

// peerHash is one peer's answer to a hash request.
type peerHash struct {
	id   uint64
	urls []string
	resp *peerHashResponse
	err  error
}

// peerHashResponse is the body of a peer's answer.
type peerHashResponse struct {
	MemberID        uint64 `json:"member_id"`
	Revision        int64  `json:"revision"` // the peer's current revision
	Hash            uint32 `json:"hash"`
	CompactRevision int64  `json:"compact_revision"`
	HashRevision    int64  `json:"hash_revision"`
}

// peerHashErrors are the refusals a peer answers with, which the asking
// member turns back into the same sentinel.
var peerHashErrors = []error{mvcc.ErrCompacted, mvcc.ErrFutureRev, ErrStopped, errPeerClusterID}

// serveHashKV answers a peer's hash request.
func (s *Server) serveHashKV(w http.ResponseWriter, r *http.Request) {
	if cid := r.Header.Get("X-Etcd-Cluster-ID"); cid != "" && cid != strconv.FormatUint(s.clusterID, 16) {
		http.Error(w, errPeerClusterID.Error(), http.StatusPreconditionFailed)
		return
	}
	rev, err := strconv.ParseInt(r.URL.Query().Get("rev"), 10, 64)
	if err != nil {
		http.Error(w, "bad revision", http.StatusBadRequest)
		return
	}
	resp, err := s.HashKV(r.Context(), rev)
	if err != nil {
		http.Error(w, err.Error(), http.StatusPreconditionFailed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(peerHashResponse{
		MemberID: s.memberID, Revision: resp.Header.Revision, Hash: resp.Hash,
		CompactRevision: resp.CompactRevision, HashRevision: resp.HashRevision,
	})
}

// peerHashes asks every other member for its hash at rev, each URL of a
// peer in turn until one answers.
func (s *Server) peerHashes(rev int64) []peerHash {
	c := peerClient(s.cfg)
	var out []peerHash
	for _, m := range s.members.all() {
		if m.ID == s.memberID || len(m.PeerURLs) == 0 {
			continue
		}
		p := peerHash{id: m.ID, urls: m.PeerURLs}
		for _, u := range m.PeerURLs {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
			p.resp, p.err = s.fetchPeerHash(ctx, c, u, rev)
			cancel()
			if p.err == nil {
				break
			}
			s.lg.Warn("failed hash kv request", "local-member-id", fmt.Sprintf("%x", s.memberID),
				"requested-revision", rev, "remote-peer-endpoint", u, "err", p.err)
		}
		out = append(out, p)
	}
	return out
}

func (s *Server) fetchPeerHash(ctx context.Context, c *http.Client, u string, rev int64) (*peerHashResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		strings.TrimSuffix(u, "/")+peerHashKVPath+"?rev="+strconv.FormatInt(rev, 10), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Etcd-Cluster-ID", strconv.FormatUint(s.clusterID, 16))
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		text := strings.TrimSpace(string(body))
		for _, e := range peerHashErrors {
			if text == e.Error() {
				return nil, e
			}
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, text)
	}
	var out peerHashResponse
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode hash: %w", err)
	}
	return &out, nil
}

// initialCorruptCheck is the check at start (Config.InitialCorruptCheck):
// it runs in New once the store is open, before raft starts, so the hash is
// of what this member had applied when it stopped.
func (s *Server) initialCorruptCheck() error {
	if !s.cfg.InitialCorruptCheck {
		return nil
	}
	self := fmt.Sprintf("%x", s.memberID)
	s.lg.Info("starting initial corruption check", "local-member-id", self, "timeout", s.cfg.RequestTimeout)
	hash, compactRev, rev, err := s.kv.HashKV(0)
	if err != nil {
		return fmt.Errorf("server: %s failed to fetch hash: %w", self, err)
	}
	mismatch := 0
	for _, p := range s.peerHashes(rev) {
		attrs := []any{"local-member-id", self, "local-member-revision", rev,
			"local-member-compact-revision", compactRev, "local-member-hash", hash,
			"remote-peer-id", fmt.Sprintf("%x", p.id), "remote-peer-endpoints", p.urls}
		switch {
		case p.resp != nil:
			attrs = append(attrs, "remote-peer-revision", p.resp.Revision,
				"remote-peer-compact-revision", p.resp.CompactRevision, "remote-peer-hash", p.resp.Hash)
			if p.resp.Hash == hash {
				continue
			}
			if p.resp.CompactRevision == compactRev {
				s.lg.Warn("found different hash values from remote peer", attrs...)
				mismatch++
			} else {
				s.lg.Warn("found different compact revision values from remote peer", attrs...)
			}
		case errors.Is(p.err, mvcc.ErrFutureRev):
			s.lg.Warn("cannot fetch hash from slow remote peer", append(attrs, "err", p.err)...)
		case errors.Is(p.err, mvcc.ErrCompacted):
			s.lg.Warn("cannot fetch hash from remote peer; local member is behind", append(attrs, "err", p.err)...)
		case errors.Is(p.err, errPeerClusterID):
			s.lg.Warn("cluster ID mismatch", append(attrs, "err", p.err)...)
		default:
			s.lg.Warn("cannot fetch hash from remote peer", append(attrs, "err", p.err)...)
		}
	}
	if mismatch > 0 {
		return fmt.Errorf("server: %s %w", self, ErrInitialCorruptCheck)
	}
	s.lg.Info("initial corruption checking passed; no corruption", "local-member-id", self)
	return nil
}

// corruptChecker runs the leader's periodic checks. Its goroutines belong
// to the server's lifecycle.
type corruptChecker struct {
	s  *Server
	lg *slog.Logger

	mu sync.Mutex
	// latestChecked is the newest compaction revision whose hash was
	// checked on the whole cluster: older ones need no new check.
	latestChecked int64
}

// startCorruptChecks starts the periodic checks Config asks for.
func startCorruptChecks(s *Server) {
	cc := &corruptChecker{s: s, lg: s.lg.With("component", "corruption-check")}
	if t := s.cfg.CorruptCheckTime; t > 0 {
		cc.lg.Info("enabled corruption checking", "local-member-id", fmt.Sprintf("%x", s.memberID), "interval", t)
		s.life.wg.Add(1)
		go cc.every(t, func() {
			if err := cc.periodicCheck(); err != nil {
				cc.lg.Warn("failed to check hash KV", "err", err)
			}
		})
	}
	if t := s.cfg.CompactHashCheckTime; t > 0 {
		cc.lg.Info("enabled compaction hash checking", "local-member-id", fmt.Sprintf("%x", s.memberID), "interval", t)
		s.life.wg.Add(1)
		go cc.every(t, cc.compactHashCheck)
	}
}

// every runs check every interval while this member leads, until the
// server stops.
func (cc *corruptChecker) every(interval time.Duration, check func()) {
	s := cc.s
	defer s.life.wg.Done()
	t := s.clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.life.stopc:
			return
		case <-t.C():
		}
		if s.node.Lead() == s.memberID {
			check()
		}
	}
}

// periodicCheck is etcd's PeriodicCheck: the leader's hash at its
// revision against every follower's at the same revision.
func (cc *corruptChecker) periodicCheck() error {
	s := cc.s
	h, compactRev, rev, err := s.hashKV(0)
	if err != nil {
		return err
	}
	peers := s.peerHashes(rev)

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	err = s.reads.wait(ctx)
	cancel()
	if err != nil {
		return err
	}
	h2, compactRev2, rev2, err := s.hashKV(0)
	if err != nil {
		return err
	}
	alarmed := false
	mismatch := func(id uint64) {
		if !alarmed {
			alarmed = true
			cc.raise(id)
		}
	}
	if h2 != h && rev2 == rev && compactRev2 == compactRev {
		cc.lg.Warn("found hash mismatch", "revision-1", rev, "compact-revision-1", compactRev, "hash-1", h,
			"revision-2", rev2, "compact-revision-2", compactRev2, "hash-2", h2)
		mismatch(s.memberID)
	}
	checked := 0
	for _, p := range peers {
		if p.resp == nil {
			continue
		}
		checked++
		peer := fmt.Sprintf("%x", p.id)
		if p.resp.Revision > rev2 {
			cc.lg.Warn("revision from follower must be less than or equal to leader's",
				"leader-revision", rev2, "follower-revision", p.resp.Revision, "follower-peer-id", peer)
			mismatch(p.id)
		}
		if p.resp.CompactRevision > compactRev2 {
			cc.lg.Warn("compact revision from follower must be less than or equal to leader's",
				"leader-compact-revision", compactRev2, "follower-compact-revision", p.resp.CompactRevision,
				"follower-peer-id", peer)
			mismatch(p.id)
		}
		if p.resp.CompactRevision == compactRev && p.resp.Hash != h {
			cc.lg.Warn("same compact revision then hashes must match",
				"leader-compact-revision", compactRev, "leader-hash", h,
				"follower-compact-revision", p.resp.CompactRevision, "follower-hash", p.resp.Hash,
				"follower-peer-id", peer)
			mismatch(p.id)
		}
	}
	cc.lg.Info("finished peer corruption check", "number-of-peers-checked", checked)
	return nil
}

// compactHashCheck is etcd's CompactHashCheck: the hashes kept at the
// newest compaction revisions not yet checked, newest first, until one is
// checked on the whole cluster or shows a mismatch.
func (cc *corruptChecker) compactHashCheck() {
	s := cc.s
	cc.lg.Info("starting compact hash check", "local-member-id", fmt.Sprintf("%x", s.memberID),
		"timeout", s.cfg.RequestTimeout)
	revs, err := s.compactionHashRevs()
	if err != nil {
		cc.lg.Warn("failed to list compaction hashes", "err", err)
		return
	}
	cc.mu.Lock()
	latest := cc.latestChecked
	cc.mu.Unlock()
	checked := 0
	for _, rev := range revs {
		if rev <= latest {
			break
		}
		checked++
		hash, compactRev, _, err := s.hashKV(rev)
		if err != nil {
			cc.lg.Warn("failed to read compaction hash", "revision", rev, "err", err)
			continue
		}
		peers := s.peerHashes(rev)
		if len(peers) == 0 {
			continue
		}
		if cc.checkPeerHashes(rev, hash, compactRev, peers) {
			break
		}
	}
	cc.lg.Info("finished compaction hash check", "number-of-hashes-checked", checked)
}

// checkPeerHashes compares the leader's compaction hash at rev with the
// peers'. It reports whether the revision is done with: checked on every
// member, or a mismatch found (and the alarm raised).
func (cc *corruptChecker) checkPeerHashes(rev int64, hash uint32, compactRev int64, peers []peerHash) bool {
	s := cc.s
	leader := fmt.Sprintf("%x", s.memberID)
	byHash := map[uint32][]uint64{hash: {s.memberID}}
	checked := 0
	for _, p := range peers {
		reason := ""
		switch {
		case p.resp == nil:
			reason = "no response"
		case p.resp.CompactRevision != compactRev:
			reason = fmt.Sprintf("the peer's CompactRevision %d doesn't match leader's CompactRevision %d",
				p.resp.CompactRevision, compactRev)
		}
		if reason != "" {
			cc.lg.Warn("Skipped peer's hash", "number-of-peers", len(peers), "leader-id", leader,
				"peer-id", fmt.Sprintf("%x", p.id), "reason", reason)
			continue
		}
		checked++
		byHash[p.resp.Hash] = append(byHash[p.resp.Hash], p.id)
	}
	if len(byHash) == 1 {
		if checked != len(peers) {
			cc.lg.Warn("skipped revision in compaction hash check; was not able to check all peers",
				"number-of-peers-checked", checked, "number-of-peers", len(peers), "revision", rev)
			return false
		}
		cc.lg.Info("successfully checked hash on whole cluster", "number-of-peers-checked", checked,
			"revision", rev, "compactRevision", compactRev)
		cc.mu.Lock()
		cc.latestChecked = max(cc.latestChecked, rev)
		cc.mu.Unlock()
		return true
	}
	quorum := (len(peers)+1)/2 + 1
	majority, found := uint32(0), false
	for h, ids := range byHash {
		if len(ids) >= quorum {
			majority, found = h, true
			break
		}
	}
	if !found {
		cc.lg.Error("Detected compaction hash mismatch but cannot identify the corrupted members, so intentionally set the memberID as 0",
			"leader-id", leader, "leader-revision", rev, "leader-compact-revision", compactRev, "leader-hash", hash)
		cc.raise(0)
	}
	for h, ids := range byHash {
		if found && h == majority {
			continue
		}
		if found {
			for _, id := range ids {
				cc.raise(id)
			}
		}
		names := make([]string, len(ids))
		for i, id := range ids {
			names[i] = fmt.Sprintf("%x", id)
		}
		cc.lg.Error("Detected compaction hash mismatch", "leader-id", leader, "leader-revision", rev,
			"leader-compact-revision", compactRev, "leader-hash", hash, "peer-hash", h,
			"peer-ids", names, "quorum-exist", found)
	}
	return true
}

// raise raises the CORRUPT alarm for member id through raft.
func (cc *corruptChecker) raise(id uint64) {
	s := cc.s
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	_, err := s.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: pb.AlarmType_CORRUPT})
	if err != nil {
		cc.lg.Warn("failed to raise the corrupt alarm", "memberID", fmt.Sprintf("%x", id), "err", err)
		return
	}
	cc.lg.Error("raised the corrupt alarm", "memberID", fmt.Sprintf("%x", id))
}

// hashKV is the store's HashKV under the server's guards.
func (s *Server) hashKV(rev int64) (hash uint32, compactRev, hashRev int64, err error) {
	if err := s.life.enter(); err != nil {
		return 0, 0, 0, err
	}
	defer s.life.leave()
	s.restoring.RLock()
	defer s.restoring.RUnlock()
	return s.kv.HashKV(rev)
}

// compactionHashRevs is the store's CompactionHashRevs under the server's
// guards.
func (s *Server) compactionHashRevs() ([]int64, error) {
	if err := s.life.enter(); err != nil {
		return nil, err
	}
	defer s.life.leave()
	s.restoring.RLock()
	defer s.restoring.RUnlock()
	return s.kv.CompactionHashRevs()
}
