package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-db/cairn/internal/lease"
)

// The peer endpoints through which a follower asks the leader about
// leases, since only the leader keeps their clocks. Bodies are protobuf:
//
//	POST /leases/renew  LeaseKeepAliveRequest  → LeaseKeepAliveResponse (ID, TTL)
//	POST /leases/ttl    LeaseTimeToLiveRequest → LeaseTimeToLiveResponse (no header)
//
// 404 means the lease does not exist; any other failure (503 from a member
// that is not, or not yet, the primary) is answered with the error's text
// and makes the follower try again.
const (
	peerLeaseRenewPath = "/leases/renew"
	peerLeaseTTLPath   = "/leases/ttl"
)

// maxLeaseBody bounds a forwarded lease request's body, and maxLeaseAnswer
// a TimeToLive answer's (which lists the lease's keys).
const (
	maxLeaseBody   = 1 << 20
	maxLeaseAnswer = 1 << 30
)

const protobufContentType = "application/protobuf"

// serveRenew answers a follower's forwarded keep-alive (POST /leases/renew).
func (lk *leaseKeeper) serveRenew(w http.ResponseWriter, r *http.Request) {
	s := lk.s
	var req pb.LeaseKeepAliveRequest
	if !readLeaseRequest(w, r, &req) {
		return
	}
	if err := s.life.enter(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer s.life.leave()
	ctx, cancel := s.withRequestTimeout(r.Context())
	defer cancel(nil)
	ttl, err := lk.renewHere(ctx, req.ID)
	if err != nil {
		writeLeaseError(w, requestCtxErr(ctx, err))
		return
	}
	writeLeaseAnswer(w, &pb.LeaseKeepAliveResponse{ID: req.ID, TTL: ttl})
}

// serveTTL answers a follower's forwarded TimeToLive (POST /leases/ttl).
func (lk *leaseKeeper) serveTTL(w http.ResponseWriter, r *http.Request) {
	s := lk.s
	var req pb.LeaseTimeToLiveRequest
	if !readLeaseRequest(w, r, &req) {
		return
	}
	if err := s.life.enter(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer s.life.leave()
	resp, err := lk.timeToLiveHere(&req)
	if err != nil {
		writeLeaseError(w, err)
		return
	}
	writeLeaseAnswer(w, resp)
}

func readLeaseRequest(w http.ResponseWriter, r *http.Request, m proto.Message) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxLeaseBody+1))
	if err != nil {
		http.Error(w, "error reading body", http.StatusBadRequest)
		return false
	}
	if len(body) > maxLeaseBody {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return false
	}
	if err := proto.Unmarshal(body, m); err != nil {
		http.Error(w, "error unmarshalling request", http.StatusBadRequest)
		return false
	}
	return true
}

func writeLeaseError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, lease.ErrLeaseNotFound):
		http.Error(w, lease.ErrLeaseNotFound.Error(), http.StatusNotFound)
	case errors.Is(err, lease.ErrNotPrimary), errors.Is(err, ErrStopped):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

func writeLeaseAnswer(w http.ResponseWriter, m proto.Message) {
	b, err := proto.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", protobufContentType)
	w.Write(b)
}

// renewRemote asks the leader, at urls, to renew lease id.
func (lk *leaseKeeper) renewRemote(ctx context.Context, urls []string, id int64) (int64, error) {
	var resp pb.LeaseKeepAliveResponse
	if err := lk.remote(ctx, urls, peerLeaseRenewPath, &pb.LeaseKeepAliveRequest{ID: id}, &resp); err != nil {
		return -1, err
	}
	return resp.TTL, nil
}

// timeToLiveRemote asks the leader, at urls, for a lease's TTL.
func (lk *leaseKeeper) timeToLiveRemote(ctx context.Context, urls []string, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	resp := &pb.LeaseTimeToLiveResponse{}
	if err := lk.remote(ctx, urls, peerLeaseTTLPath, r, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// remote posts req to path on the first of urls that answers and
// decodes the answer into resp. Errors: lease.ErrLeaseNotFound (404), or
// one describing the failure, which onLeader retries.
func (lk *leaseKeeper) remote(ctx context.Context, urls []string, path string, req, resp proto.Message) error {
	body, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	c := lk.httpClient()
	var errs []error
	for _, u := range urls {
		err := func() error {
			hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(u, "/")+path, bytes.NewReader(body))
			if err != nil {
				return err
			}
			hr.Header.Set("Content-Type", protobufContentType)
			r, err := c.Do(hr)
			if err != nil {
				return err
			}
			defer r.Body.Close()
			b, err := io.ReadAll(io.LimitReader(r.Body, maxLeaseAnswer))
			if err != nil {
				return err
			}
			switch r.StatusCode {
			case http.StatusOK:
				if err := proto.Unmarshal(b, resp); err != nil {
					return fmt.Errorf("decode %s answer: %w", path, err)
				}
				return nil
			case http.StatusNotFound:
				// A member without the endpoint answers 404 too; only the
				// lease's own answer says it does not exist.
				if strings.TrimSpace(string(b)) == lease.ErrLeaseNotFound.Error() {
					return lease.ErrLeaseNotFound
				}
				return fmt.Errorf("%s: %s", r.Status, strings.TrimSpace(string(b)))
			default:
				return fmt.Errorf("%s: %s", r.Status, strings.TrimSpace(string(b)))
			}
		}()
		if err == nil || errors.Is(err, lease.ErrLeaseNotFound) {
			return err
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	return fmt.Errorf("server: forward %s to the leader: %w", path, errors.Join(errs...))
}
