package lockelect

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// post sends req as JSON to path on the run's gateway and decodes the answer
// into resp. It returns "" on success and the error as a client reads it
// otherwise.
func (r *recorder) post(t *testing.T, path string, req, resp proto.Message) string {
	t.Helper()
	body, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, r.svc.http+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hresp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer hresp.Body.Close()
	out, err := io.ReadAll(hresp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if hresp.StatusCode != http.StatusOK {
		return fmt.Sprintf("HTTP %d %s", hresp.StatusCode, gatewayError(t, out))
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(out, resp); err != nil {
		t.Fatalf("%s answer %s: %v", path, out, err)
	}
	return ""
}

// gatewayError renders the gateway's JSON error body.
func gatewayError(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	return fmt.Sprintf("code=%d %q", e.Code, e.Message)
}

// httpObservation is an Observe stream over the gateway: one JSON object
// per line.
type httpObservation struct {
	r      *recorder
	lines  *bufio.Scanner
	cancel context.CancelFunc
}

func (r *recorder) observeHTTP(t *testing.T, name string) *httpObservation {
	t.Helper()
	body, err := protojson.Marshal(&v3electionpb.LeaderRequest{Name: r.name(name)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, r.svc.http+"/v3/election/observe", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hresp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		hresp.Body.Close()
	})
	return &httpObservation{r: r, lines: bufio.NewScanner(hresp.Body), cancel: cancel}
}

// next records the next object on the stream. The read ends with the
// test's context if nothing comes.
func (o *httpObservation) next(t *testing.T, what string) {
	t.Helper()
	if !o.lines.Scan() {
		t.Fatalf("%s: stream ended: %v", what, o.lines.Err())
	}
	var msg struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(o.lines.Bytes(), &msg); err != nil {
		t.Fatalf("%s: %s: %v", what, o.lines.Bytes(), err)
	}
	if msg.Error != nil {
		o.r.logf("%s: %s", what, gatewayError(t, msg.Error))
		return
	}
	var resp v3electionpb.LeaderResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(msg.Result, &resp); err != nil {
		t.Fatalf("%s: %s: %v", what, msg.Result, err)
	}
	o.r.logf("%s: %s", what, o.r.kv(resp.Kv))
}

// TestGatewayMatchesEtcd sends the same JSON requests to etcd's gateway and
// to ours (RegisterGateway) and compares the answers: bodies, error
// statuses, and the Observe stream.
func TestGatewayMatchesEtcd(t *testing.T) {
	compareWithEtcd(t, func(t *testing.T, r *recorder) {
		a := r.grant(t, "A")
		gone := r.grant(t, "gone")
		r.revoke(t, gone)

		var lock v3lockpb.LockResponse
		if e := r.post(t, "/v3/lock/lock", &v3lockpb.LockRequest{Name: r.name("g"), Lease: a}, &lock); e != "" {
			t.Fatalf("lock: %s", e)
		}
		r.logf("lock: key=%s", r.key(lock.Key))
		e := r.post(t, "/v3/lock/lock", &v3lockpb.LockRequest{Name: r.name("g"), Lease: gone}, &v3lockpb.LockResponse{})
		r.logf("lock with revoked lease: %s", e)
		e = r.post(t, "/v3/lock/unlock", &v3lockpb.UnlockRequest{Key: lock.Key}, &v3lockpb.UnlockResponse{})
		r.logf("unlock: %q", e)
		e = r.post(t, "/v3/lock/unlock", &v3lockpb.UnlockRequest{}, &v3lockpb.UnlockResponse{})
		r.logf("unlock empty key: %s", e)

		var camp v3electionpb.CampaignResponse
		if e := r.post(t, "/v3/election/campaign", &v3electionpb.CampaignRequest{Name: r.name("h"), Lease: a, Value: []byte("v1")}, &camp); e != "" {
			t.Fatalf("campaign: %s", e)
		}
		r.campaignResult("campaign", &camp, nil)
		obs := r.observeHTTP(t, "h")
		obs.next(t, "observe")
		e = r.post(t, "/v3/election/proclaim", &v3electionpb.ProclaimRequest{Leader: camp.Leader, Value: []byte("v2")}, &v3electionpb.ProclaimResponse{})
		r.logf("proclaim: %q", e)
		obs.next(t, "observe")
		var leader v3electionpb.LeaderResponse
		e = r.post(t, "/v3/election/leader", &v3electionpb.LeaderRequest{Name: r.name("h")}, &leader)
		r.logf("leader: %q %s", e, r.kv(leader.Kv))
		e = r.post(t, "/v3/election/resign", &v3electionpb.ResignRequest{Leader: camp.Leader}, &v3electionpb.ResignResponse{})
		r.logf("resign: %q", e)
		e = r.post(t, "/v3/election/leader", &v3electionpb.LeaderRequest{Name: r.name("h")}, &v3electionpb.LeaderResponse{})
		r.logf("leader after resign: %s", e)
		e = r.post(t, "/v3/election/proclaim", &v3electionpb.ProclaimRequest{Leader: camp.Leader, Value: []byte("v3")}, &v3electionpb.ProclaimResponse{})
		r.logf("proclaim after resign: %s", e)
		e = r.post(t, "/v3/election/resign", &v3electionpb.ResignRequest{}, &v3electionpb.ResignResponse{})
		r.logf("resign without leader: %s", e)

		// The observer waits through the vacancy for the next leader.
		if e := r.post(t, "/v3/election/campaign", &v3electionpb.CampaignRequest{Name: r.name("h"), Lease: a, Value: []byte("v4")}, &camp); e != "" {
			t.Fatalf("campaign: %s", e)
		}
		obs.next(t, "observe")
	})
}
