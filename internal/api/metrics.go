package api

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rpcMetrics counts gRPC requests in the series etcd exports (those of
// go-grpc-prometheus): grpc_server_started_total, grpc_server_handled_total
// (by code), grpc_server_msg_received_total and grpc_server_msg_sent_total,
// labelled by type, service and method, with the same counting rules (a
// unary call receives and sends one message, even when it fails; a stream
// counts every RecvMsg and SendMsg call).
//
// It replaces go-grpc-middleware's ServerMetrics, which resolves every
// counter from its label values on every request (4 label-hash lookups and
// a few allocations per call, about 2% of a put's server CPU): here a
// method's counters are resolved once, on its first call or when
// initialize registers it, and a request costs a map load and atomic adds.
//
// With extensive metrics (etcd's --metrics=extensive) it also times every
// call in grpc_server_handling_seconds. The byte counts of client
// messages (etcd_network_client_grpc_*_bytes_total, see metrics_grpc.go)
// are here too. Calls of the member's own self-client are not counted
// (see SelfUserAgent).
type rpcMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
	handling                         *prometheus.HistogramVec // nil unless extensive
	bytes                            byteCounters
	methods                          sync.Map // full method name -> *methodMetrics
}

// methodMetrics are one method's counters. handled is filled per code on
// first use, so that only codes a method answered with (or all of them,
// for the methods initialize registers, as go-grpc-prometheus does)
// appear in the output.
type methodMetrics struct {
	typ, service, method    string
	started, received, sent prometheus.Counter
	handling                prometheus.Observer // nil unless extensive
	handled                 [codes.Unauthenticated + 1]atomic.Pointer[prometheus.Counter]
	m                       *rpcMetrics
}

func newRPCMetrics(extensive bool) *rpcMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	var handling *prometheus.HistogramVec
	if extensive {
		handling = newHandlingHistogram()
	}
	return &rpcMetrics{
		handling: handling,
		bytes:    newByteCounters(),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total",
			Help: "Total number of RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(labels, "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total",
			Help: "Total number of RPC stream messages received on the server.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total",
			Help: "Total number of gRPC stream messages sent by the server.",
		}, labels),
	}
}

// Describe implements prometheus.Collector.
func (m *rpcMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.started.Describe(ch)
	m.handled.Describe(ch)
	m.received.Describe(ch)
	m.sent.Describe(ch)
	if m.handling != nil {
		m.handling.Describe(ch)
	}
	m.bytes.sent.Describe(ch)
	m.bytes.received.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *rpcMetrics) Collect(ch chan<- prometheus.Metric) {
	m.started.Collect(ch)
	m.handled.Collect(ch)
	m.received.Collect(ch)
	m.sent.Collect(ch)
	if m.handling != nil {
		m.handling.Collect(ch)
	}
	m.bytes.sent.Collect(ch)
	m.bytes.received.Collect(ch)
}

// initialize creates every series of the methods registered on gs so far,
// at zero, all codes included, so that they are there to query before the
// first call.
func (m *rpcMetrics) initialize(gs *grpc.Server) {
	for service, info := range gs.GetServiceInfo() {
		for _, mi := range info.Methods {
			mm := m.lookup("/"+service+"/"+mi.Name, streamType(mi.IsClientStream, mi.IsServerStream))
			for c := range mm.handled {
				mm.handledCounter(codes.Code(c))
			}
		}
	}
}

// lookup returns the counters of fullMethod, creating them on first use.
func (m *rpcMetrics) lookup(fullMethod, typ string) *methodMetrics {
	if mm, ok := m.methods.Load(fullMethod); ok {
		return mm.(*methodMetrics)
	}
	service, method := "unknown", "unknown"
	if s, meth, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/"); ok {
		service, method = s, meth
	}
	mm := &methodMetrics{
		typ: typ, service: service, method: method, m: m,
		started:  m.started.WithLabelValues(typ, service, method),
		received: m.received.WithLabelValues(typ, service, method),
		sent:     m.sent.WithLabelValues(typ, service, method),
	}
	if m.handling != nil {
		mm.handling = m.handling.WithLabelValues(typ, service, method)
	}
	actual, _ := m.methods.LoadOrStore(fullMethod, mm)
	return actual.(*methodMetrics)
}

func (mm *methodMetrics) handledCounter(c codes.Code) prometheus.Counter {
	if int(c) >= len(mm.handled) {
		// Not a code gRPC defines; not worth a slot.
		return mm.m.handled.WithLabelValues(mm.typ, mm.service, mm.method, c.String())
	}
	if p := mm.handled[c].Load(); p != nil {
		return *p
	}
	counter := mm.m.handled.WithLabelValues(mm.typ, mm.service, mm.method, c.String())
	mm.handled[c].Store(&counter)
	return counter
}

// done counts a finished call with the code its error maps to (context
// errors as gRPC maps them) and, with extensive metrics, times it from
// start.
func (mm *methodMetrics) done(err error, start time.Time) {
	if mm.handling != nil {
		mm.handling.Observe(time.Since(start).Seconds())
	}
	code := codes.OK
	if err != nil {
		s, ok := status.FromError(err)
		if !ok {
			s = status.FromContextError(err)
		}
		code = s.Code()
	}
	mm.handledCounter(code).Inc()
}

// streamType names a method's type as go-grpc-prometheus does.
func streamType(clientStream, serverStream bool) string {
	switch {
	case !clientStream && !serverStream:
		return "unary"
	case clientStream && !serverStream:
		return "client_stream"
	case !clientStream && serverStream:
		return "server_stream"
	}
	return "bidi_stream"
}

// unaryInterceptor counts unary calls around next, the interceptor it
// wraps, which it calls itself rather than through gRPC's chaining (that
// makes a closure for every call).
func (m *rpcMetrics) unaryInterceptor(next grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if fromSelf(ctx) {
			return next(ctx, req, info, handler)
		}
		mm := m.lookup(info.FullMethod, "unary")
		mm.started.Inc()
		mm.received.Inc()
		var start time.Time
		if mm.handling != nil {
			start = time.Now()
		}
		resp, err := next(ctx, req, info, handler)
		mm.sent.Inc()
		mm.done(err, start)
		return resp, err
	}
}

func (m *rpcMetrics) streamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if fromSelf(ss.Context()) {
			return handler(srv, ss)
		}
		mm := m.lookup(info.FullMethod, streamType(info.IsClientStream, info.IsServerStream))
		mm.started.Inc()
		var start time.Time
		if mm.handling != nil {
			start = time.Now()
		}
		err := handler(srv, &countedStream{ServerStream: ss, mm: mm})
		mm.done(err, start)
		return err
	}
}

// countedStream counts a stream's messages, every call, as
// go-grpc-prometheus does (a RecvMsg that ends with io.EOF included).
type countedStream struct {
	grpc.ServerStream
	mm *methodMetrics
}

func (s *countedStream) SendMsg(msg any) error {
	err := s.ServerStream.SendMsg(msg)
	s.mm.sent.Inc()
	return err
}

func (s *countedStream) RecvMsg(msg any) error {
	err := s.ServerStream.RecvMsg(msg)
	s.mm.received.Inc()
	return err
}
