package api

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// SelfUserAgent is the user agent a member's own clients (internal/embed's
// self-client, which the Lock and Election services call the KV, Lease and
// Watch services with) dial their member with, over its unix socket. Their
// calls are not counted in the grpc_server_* metrics: etcd makes the same
// calls in process, without gRPC, and a dashboard should see a Lock call
// as one request, not as the Lock plus the txns and watches behind it.
// The gRPC gateway's calls, which etcd makes over gRPC too, are counted.
const SelfUserAgent = "cairn-self"

// handlingBuckets are go-grpc-prometheus' defaults for
// grpc_server_handling_seconds (prometheus.DefBuckets), which etcd keeps.
var handlingBuckets = prometheus.DefBuckets

// newHandlingHistogram is etcd's --metrics=extensive histogram of the time
// a server took to handle each RPC, as go-grpc-prometheus defines it.
func newHandlingHistogram() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "grpc_server_handling_seconds",
		Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
		Buckets: handlingBuckets,
	}, []string{"grpc_type", "grpc_service", "grpc_method"})
}

// fromSelf reports whether the call comes from the member's own
// self-client: a unix socket peer with SelfUserAgent. The peer check
// comes first, as it is a context lookup and no metadata is copied for
// the calls of TCP clients.
func fromSelf(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil || p.Addr.Network() != "unix" {
		return false
	}
	ua := metadata.ValueFromIncomingContext(ctx, "user-agent")
	return len(ua) > 0 && strings.HasPrefix(ua[0], SelfUserAgent)
}

// byteCounters are etcd's counts of the bytes of client gRPC messages,
// encoded: etcd_network_client_grpc_{sent,received}_bytes_total.
type byteCounters struct {
	sent, received prometheus.Counter
}

func newByteCounters() byteCounters {
	return byteCounters{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "network", Name: "client_grpc_sent_bytes_total",
			Help: "The total number of bytes sent to grpc clients.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "network", Name: "client_grpc_received_bytes_total",
			Help: "The total number of bytes received from grpc clients.",
		}),
	}
}

// countingCodec is gRPC's proto codec (passing pre-encoded ranges through,
// see preEncodedCodec) counting the bytes it encodes and
// decodes, as etcd's codec does: one addition per message, nothing copied.
type countingCodec struct {
	encoding.CodecV2
	bytes byteCounters
}

func newCountingCodec(bc byteCounters) *countingCodec {
	return &countingCodec{CodecV2: preEncodedCodec{encoding.GetCodecV2("proto")}, bytes: bc}
}

// Marshal implements encoding.CodecV2.
func (c *countingCodec) Marshal(v any) (mem.BufferSlice, error) {
	out, err := c.CodecV2.Marshal(v)
	if err == nil {
		c.bytes.sent.Add(float64(out.Len()))
	}
	return out, err
}

// Unmarshal implements encoding.CodecV2.
func (c *countingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c.bytes.received.Add(float64(data.Len()))
	return c.CodecV2.Unmarshal(data, v)
}

// codecOption is the server option that counts message bytes on m's
// counters.
func (m *rpcMetrics) codecOption() grpc.ServerOption {
	return grpc.ForceServerCodecV2(newCountingCodec(m.bytes))
}
