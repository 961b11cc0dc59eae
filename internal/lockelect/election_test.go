package lockelect

import (
	"context"
	"testing"

	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
)

// campaignResult records one Campaign answer.
func (r *recorder) campaignResult(what string, resp *v3electionpb.CampaignResponse, err error) {
	if err != nil {
		r.logf("%s: %s", what, r.err(err))
		return
	}
	l := resp.GetLeader()
	r.logf("%s: leader name=%s key=%s rev=%s lease=%s", what,
		r.key(l.GetName()), r.key(l.GetKey()), r.rev(l.GetRev()), r.lease(l.GetLease()))
}

// campaign calls Campaign and records the answer.
func (r *recorder) campaign(t *testing.T, what, name string, lease int64, value string) *v3electionpb.LeaderKey {
	t.Helper()
	resp, err := r.svc.elect.Campaign(testCtx(t), &v3electionpb.CampaignRequest{Name: r.name(name), Lease: lease, Value: []byte(value)})
	r.campaignResult(what, resp, err)
	return resp.GetLeader()
}

// campaignAsync starts Campaign in the background and waits until its key
// is queued, that is until n keys exist under the name.
func (r *recorder) campaignAsync(t *testing.T, ctx context.Context, name string, lease int64, value string, n int) <-chan result[*v3electionpb.CampaignResponse] {
	t.Helper()
	ch := async(func() (*v3electionpb.CampaignResponse, error) {
		return r.svc.elect.Campaign(ctx, &v3electionpb.CampaignRequest{Name: r.name(name), Lease: lease, Value: []byte(value)})
	})
	r.waitKeys(t, name+"/", n)
	return ch
}

// proclaim calls Proclaim and records the outcome.
func (r *recorder) proclaim(t *testing.T, what string, l *v3electionpb.LeaderKey, value string) {
	t.Helper()
	_, err := r.svc.elect.Proclaim(testCtx(t), &v3electionpb.ProclaimRequest{Leader: l, Value: []byte(value)})
	r.outcome(what, err)
}

// resign calls Resign and records the outcome.
func (r *recorder) resign(t *testing.T, what string, l *v3electionpb.LeaderKey) {
	t.Helper()
	_, err := r.svc.elect.Resign(testCtx(t), &v3electionpb.ResignRequest{Leader: l})
	r.outcome(what, err)
}

func (r *recorder) outcome(what string, err error) {
	if err != nil {
		r.logf("%s: %s", what, r.err(err))
		return
	}
	r.logf("%s: ok", what)
}

// leader calls Leader and records the answer.
func (r *recorder) leader(t *testing.T, what, name string) {
	t.Helper()
	resp, err := r.svc.elect.Leader(testCtx(t), &v3electionpb.LeaderRequest{Name: r.name(name)})
	if err != nil {
		r.logf("%s: %s", what, r.err(err))
		return
	}
	r.logf("%s: %s", what, r.kv(resp.Kv))
}

// observation is an Observe stream read in the background.
type observation struct {
	r  *recorder
	ch chan result[*v3electionpb.LeaderResponse]
}

// observe opens an Observe stream on name.
func (r *recorder) observe(t *testing.T, name string) *observation {
	t.Helper()
	stream, err := r.svc.elect.Observe(testCtx(t), &v3electionpb.LeaderRequest{Name: r.name(name)})
	if err != nil {
		t.Fatal(err)
	}
	o := &observation{r: r, ch: make(chan result[*v3electionpb.LeaderResponse], 100)}
	go func() {
		for {
			resp, err := stream.Recv()
			o.ch <- result[*v3electionpb.LeaderResponse]{resp, err}
			if err != nil {
				return
			}
		}
	}()
	return o
}

// next records the next message on the stream.
func (o *observation) next(t *testing.T, what string) {
	t.Helper()
	resp, err := await(t, o.ch, what)
	if err != nil {
		o.r.logf("%s: %s", what, o.r.err(err))
		return
	}
	o.r.logf("%s: %s", what, o.r.kv(resp.Kv))
}

// TestElectionMatchesEtcd runs the same Election calls against etcd's
// Election service and ours and compares what a client sees: leader keys,
// values, revisions and leases, the Observe stream, and errors.
func TestElectionMatchesEtcd(t *testing.T) {
	compareWithEtcd(t, func(t *testing.T, r *recorder) {
		a, b, c := r.grant(t, "A"), r.grant(t, "B"), r.grant(t, "C")
		r.leader(t, "leader of empty election", "e")
		obs := r.observe(t, "e")

		la := r.campaign(t, "campaign A", "e", a, "a1")
		obs.next(t, "observe")
		r.leader(t, "leader", "e")
		r.proclaim(t, "proclaim a2", la, "a2")
		obs.next(t, "observe")
		// Campaigning again with the same lease proclaims the new value.
		r.campaign(t, "campaign A again", "e", a, "a3")
		obs.next(t, "observe")
		r.campaign(t, "campaign A again, same value", "e", a, "a3")

		bch := r.campaignAsync(t, testCtx(t), "e", b, "b1", 2)
		r.proclaim(t, "proclaim without leader", nil, "x")
		r.resign(t, "resign without leader", nil)
		stale := &v3electionpb.LeaderKey{Name: la.Name, Key: la.Key, Rev: la.Rev + 1, Lease: la.Lease}
		r.proclaim(t, "proclaim with wrong rev", stale, "x")
		r.resign(t, "resign with wrong rev", stale)
		r.leader(t, "leader", "e")
		late := r.observe(t, "e")
		late.next(t, "late observe")

		r.resign(t, "resign A", la)
		resp, err := await(t, bch, "Campaign B")
		r.campaignResult("campaign B after A resigned", resp, err)
		lb := resp.GetLeader()
		obs.next(t, "observe")
		late.next(t, "late observe")
		r.proclaim(t, "proclaim as A after resigning", la, "x")
		r.resign(t, "resign A again", la)

		// The leader's lease is revoked: the next campaigner leads.
		cch := r.campaignAsync(t, testCtx(t), "e", c, "c1", 2)
		r.revoke(t, b)
		resp, err = await(t, cch, "Campaign C")
		r.campaignResult("campaign C after B's lease revoked", resp, err)
		lc := resp.GetLeader()
		obs.next(t, "observe")
		// Observe reads the next leader when it sees the old one's key
		// deleted, in etcd as here: an observer that handled the delete
		// only after C resigned would skip C. Wait for it to see C.
		late.next(t, "late observe")
		r.proclaim(t, "proclaim as B, lease revoked", lb, "x")
		r.campaign(t, "campaign with revoked lease", "e", b, "b2")

		// A campaigner that gives up leaves the queue.
		d := r.grant(t, "D")
		dctx, cancel := context.WithCancel(testCtx(t))
		dch := r.campaignAsync(t, dctx, "e", d, "d1", 2)
		// Cancel once D's key is in, so that the campaign is waiting: a
		// cancel that races the campaign's own put can leave the key behind
		// in etcd's client (the put applied, its answer lost), and the
		// queue would then keep it until its lease ends.
		r.waitKeys(t, "e/", 2)
		cancel()
		resp, err = await(t, dch, "cancelled Campaign")
		r.campaignResult("campaign D cancelled", resp, err)
		r.waitKeys(t, "e/", 1)
		r.keys(t, "e/")

		// No leader: observers wait for the next key to be created.
		r.resign(t, "resign C", lc)
		r.leader(t, "leader after all resigned", "e")
		la = r.campaign(t, "campaign A", "e", a, "a9")
		obs.next(t, "observe")
		late.next(t, "late observe")

		// Lease 0, in Campaign and in Proclaim: a lease of the service's own.
		l0 := r.campaign(t, "campaign lease 0", "z", 0, "z1")
		r.leader(t, "leader", "z")
		r.proclaim(t, "proclaim lease 0", &v3electionpb.LeaderKey{Name: la.Name, Key: la.Key, Rev: la.Rev}, "a10")
		obs.next(t, "observe")
		late.next(t, "late observe")
		r.leader(t, "leader", "e")
		r.resign(t, "resign lease-0 leader", l0)
		r.leader(t, "leader", "z")

		// Nothing else is pending on the streams: the next message is the
		// next proclamation.
		r.proclaim(t, "proclaim a11", la, "a11")
		obs.next(t, "observe")
		late.next(t, "late observe")
	})
}

// TestCampaignLostWhileWaiting checks the election's lease-alive guarantee:
// a campaigner whose lease is revoked while it waits is answered "not
// leader", never elected (etcd's own Election service elects it with a key
// that no longer exists).
func TestCampaignLostWhileWaiting(t *testing.T) {
	f := newFixture(t)
	a, b := f.grant(t, 60), f.grant(t, 60)
	ctx := testCtx(t)
	la, err := f.ours.elect.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: a, Value: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	bch := async(func() (*v3electionpb.CampaignResponse, error) {
		return f.ours.elect.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: b, Value: []byte("b")})
	})
	f.waitKeys(t, "e/", 2)
	f.revoke(t, b)
	// The waiter gives up as soon as its key is gone, with A still leading.
	resp, err := await(t, bch, "Campaign B")
	if err == nil || errText(err) != ErrElectionNotLeader.Error() {
		t.Fatalf("Campaign after lease revoked = %v, %v; want %q", resp, err, ErrElectionNotLeader)
	}
	if _, err := f.ours.elect.Resign(ctx, &v3electionpb.ResignRequest{Leader: la.Leader}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ours.elect.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")}); errText(err) != ErrElectionNoLeader.Error() {
		t.Fatalf("Leader after the only leader resigned: %v, want %q", err, ErrElectionNoLeader)
	}
}
