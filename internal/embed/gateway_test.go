package embed

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestGatewayLeaseClusterWatch uses etcd's JSON gateway paths for leases,
// the member list and a watch stream, as curl users and HTTP-only clients
// do.
func TestGatewayLeaseClusterWatch(t *testing.T) {
	m := start(t, testConfig(t, t.TempDir()))
	url := m.ClientURLs()[0]
	hc := http.DefaultClient

	var grant struct {
		ID  string `json:"ID"`
		TTL string `json:"TTL"`
	}
	postJSON(t, hc, url+"/v3/lease/grant", `{"TTL":"60"}`, http.StatusOK, &grant)
	if grant.ID == "" || grant.TTL != "60" {
		t.Fatalf("grant answered %+v", grant)
	}
	var ttl struct {
		ID, TTL, GrantedTTL string
	}
	postJSON(t, hc, url+"/v3/kv/lease/timetolive", `{"ID":"`+grant.ID+`"}`, http.StatusOK, &ttl)
	if ttl.ID != grant.ID || ttl.GrantedTTL != "60" {
		t.Fatalf("timetolive answered %+v", ttl)
	}
	var leases struct {
		Leases []struct{ ID string } `json:"leases"`
	}
	postJSON(t, hc, url+"/v3/lease/leases", `{}`, http.StatusOK, &leases)
	if len(leases.Leases) != 1 || leases.Leases[0].ID != grant.ID {
		t.Fatalf("leases answered %+v", leases)
	}
	postJSON(t, hc, url+"/v3/lease/revoke", `{"ID":"`+grant.ID+`"}`, http.StatusOK, nil)
	postJSON(t, hc, url+"/v3/lease/revoke", `{"ID":"`+grant.ID+`"}`, http.StatusNotFound, nil)

	var members struct {
		Members []struct {
			Name       string   `json:"name"`
			ClientURLs []string `json:"clientURLs"`
		} `json:"members"`
	}
	postJSON(t, hc, url+"/v3/cluster/member/list", `{}`, http.StatusOK, &members)
	if len(members.Members) != 1 || members.Members[0].Name != "m1" {
		t.Fatalf("member list answered %+v", members)
	}

	// A watch is a stream of JSON objects, one per line.
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, url+"/v3/watch",
		strings.NewReader(`{"create_request":{"key":"`+b64("gw")+`"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() map[string]any {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("watch stream ended: %v", lines.Err())
		}
		var v struct {
			Result map[string]any `json:"result"`
		}
		if err := json.Unmarshal(lines.Bytes(), &v); err != nil || v.Result == nil {
			t.Fatalf("watch stream line %s: %v", lines.Bytes(), err)
		}
		return v.Result
	}
	if created := next(); created["created"] != true {
		t.Fatalf("first watch answer %v, want created", created)
	}
	postJSON(t, hc, url+"/v3/kv/put", `{"key":"`+b64("gw")+`","value":"`+b64("v")+`"}`, http.StatusOK, nil)
	evs, _ := next()["events"].([]any)
	if len(evs) != 1 {
		t.Fatalf("watch events %v, want the put", evs)
	}
	kv := evs[0].(map[string]any)["kv"].(map[string]any)
	if kv["key"] != b64("gw") || kv["value"] != b64("v") {
		t.Fatalf("watch event %v", kv)
	}
}
