package api

import (
	"fmt"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// counter returns the value of the series name{labels} in reg, and whether
// it exists.
func counter(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

func kvLabels(typ, method string, code ...string) map[string]string {
	l := map[string]string{"grpc_type": typ, "grpc_service": "etcdserverpb.KV", "grpc_method": method}
	if len(code) > 0 {
		l["grpc_code"] = code[0]
	}
	return l
}

// TestRPCMetrics checks the grpc_server_* series against go-grpc-prometheus'
// rules, which etcd's dashboards assume.
func TestRPCMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := serve(t, newFakeBackend(), Options{Registerer: reg, Gatherer: reg})
	ctx := ctxT(t)

	// Every registered method's series exist before any call, at zero,
	// handled ones for every code.
	if v, ok := counter(t, reg, "grpc_server_handled_total", kvLabels("unary", "Compact", "Unavailable")); !ok || v != 0 {
		t.Errorf("handled{Compact, Unavailable} before any call: %v %v, want 0 true", v, ok)
	}
	if v, ok := counter(t, reg, "grpc_server_started_total", kvLabels("server_stream", "RangeStream")); !ok || v != 0 {
		t.Errorf("started{RangeStream} before any call: %v %v, want 0 true", v, ok)
	}

	if _, err := s.client.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	// An invalid request: one message in, one out (counted though the
	// call failed, as go-grpc-prometheus does), handled with its code.
	_, err := s.kv().Range(ctx, &pb.RangeRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty range key: %v, want InvalidArgument", err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"grpc_server_started_total", kvLabels("unary", "Put"), 1},
		{"grpc_server_msg_received_total", kvLabels("unary", "Put"), 1},
		{"grpc_server_msg_sent_total", kvLabels("unary", "Put"), 1},
		{"grpc_server_handled_total", kvLabels("unary", "Put", "OK"), 1},
		{"grpc_server_started_total", kvLabels("unary", "Range"), 1},
		{"grpc_server_msg_sent_total", kvLabels("unary", "Range"), 1},
		{"grpc_server_handled_total", kvLabels("unary", "Range", "InvalidArgument"), 1},
		{"grpc_server_handled_total", kvLabels("unary", "Range", "OK"), 0},
	} {
		if v, _ := counter(t, reg, c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}

	// A stream counts each message.
	for i := range 3 {
		if _, err := s.client.Put(ctx, fmt.Sprintf("s%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := s.kv().RangeStream(ctx, &pb.RangeRequest{Key: []byte("s"), RangeEnd: []byte("t")})
	if err != nil {
		t.Fatal(err)
	}
	chunks := 0
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		chunks++
	}
	labels := kvLabels("server_stream", "RangeStream")
	if v, _ := counter(t, reg, "grpc_server_msg_sent_total", labels); v != float64(chunks) || chunks == 0 {
		t.Errorf("RangeStream sent %v messages, the client got %d", v, chunks)
	}
	if v, _ := counter(t, reg, "grpc_server_msg_received_total", labels); v != 1 {
		t.Errorf("RangeStream received %v messages, want 1", v)
	}
	if v, _ := counter(t, reg, "grpc_server_handled_total", kvLabels("server_stream", "RangeStream", "OK")); v != 1 {
		t.Errorf("RangeStream handled OK %v times, want 1", v)
	}
}
