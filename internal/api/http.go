package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// healthTimeout bounds the read a health check makes: etcd's request timeout
// (5 s plus two election timeouts at the default 1 s).
const healthTimeout = 7 * time.Second

// HTTPOptions configure the HTTP endpoints beyond Options.
type HTTPOptions struct {
	// EnablePprof serves Go's profiler under /debug/pprof/, as etcd's
	// --enable-pprof does.
	EnablePprof bool
	// EnableGateway serves etcd's JSON gateway under /v3/ (etcd's
	// --enable-grpc-gateway, on by default there).
	EnableGateway bool
}

// NewHTTPHandler returns the HTTP endpoints etcd serves beside gRPC on its
// client port:
//
//   - /health: {"health":"true","reason":""} when the member has no alarm,
//     knows a leader and can read; otherwise status 503 and "false" with
//     etcd's reason ("RAFT NO LEADER", "ALARM NOSPACE",
//     "RANGE ERROR:<error>"). ?serializable=true skips the leader and
//     checks a local read; ?exclude=NOSPACE ignores that alarm.
//   - /livez and /readyz (and /livez/<check>, /readyz/<check>): etcd's
//     plain-text probes, "ok" or 503 with the failed checks listed;
//     ?verbose lists every check, ?exclude=<check> skips one.
//   - /version: {"etcdserver":"3.7.3","etcdcluster":"3.7.0","storage":"3.7.0"}:
//     the server version, and the cluster and storage versions as this
//     member has applied them ("not_decided" and "unknown" before the
//     leader has decided), as etcd reports them.
//   - /metrics: Prometheus metrics from Options.Gatherer.
//   - /v3/...: with HTTPOptions.EnableGateway, the KV and Maintenance calls
//     as JSON over HTTP, as etcd's gRPC gateway serves them.
//
// Only GET is allowed on the probes and /version, as in etcd.
func NewHTTPHandler(b Backend, o Options, ho HTTPOptions) http.Handler {
	o = o.withDefaults()
	h := &httpService{b: b, log: o.Logger, metrics: healthMetrics(o.Registerer)}
	mux := http.NewServeMux()
	mux.HandleFunc("/health", h.health)
	mux.HandleFunc("/version", h.version)
	mux.Handle("/metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))

	livez := probes{name: "livez", checks: map[string]func(context.Context) error{
		"serializable_read": h.readCheck(true),
	}}
	readyz := probes{name: "readyz", checks: map[string]func(context.Context) error{
		"data_corruption":   h.alarmCheck(pb.AlarmType_CORRUPT),
		"serializable_read": h.readCheck(true),
		"linearizable_read": h.readCheck(false),
		"non_learner":       h.learnerCheck,
	}}
	for _, p := range []probes{livez, readyz} {
		p.install(mux, h.log)
	}

	if ho.EnableGateway {
		kv := &kvService{b: b, maxTxnOps: int(o.MaxTxnOps), streamChunkBytes: int(o.MaxRequestBytes)}
		gwmux, err := newGateway(b, kv, &maintenanceService{b: b, log: o.Logger})
		if err != nil {
			// Registration only fails on a programming error in the
			// generated code's patterns.
			panic(err)
		}
		mux.Handle("/v3/", gwmux)
	}
	if ho.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

type httpService struct {
	b       Backend
	log     *slog.Logger
	metrics *healthCounters
}

// healthDoc is etcd's /health document.
type healthDoc struct {
	Health string `json:"health"`
	Reason string `json:"reason"`
}

func onlyGET(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet {
		return true
	}
	w.Header().Set("Allow", http.MethodGet)
	http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	return false
}

func (h *httpService) health(w http.ResponseWriter, r *http.Request) {
	if !onlyGET(w, r) {
		return
	}
	serializable := r.URL.Query().Get("serializable") == "true"
	res := h.checkHealth(r.Context(), querySet(r, "exclude"), serializable)
	d, _ := json.Marshal(res)
	if res.Health != "true" {
		h.metrics.failed.Inc()
		h.log.Warn("/health error", "output", string(d))
		http.Error(w, string(d), http.StatusServiceUnavailable)
		return
	}
	h.metrics.success.Inc()
	w.WriteHeader(http.StatusOK)
	w.Write(d)
}

func (h *httpService) checkHealth(ctx context.Context, excluded map[string]bool, serializable bool) healthDoc {
	for _, a := range h.b.Alarms() {
		if excluded[a.Alarm.String()] {
			continue
		}
		switch a.Alarm {
		case pb.AlarmType_NOSPACE:
			return healthDoc{"false", "ALARM NOSPACE"}
		case pb.AlarmType_CORRUPT:
			return healthDoc{"false", "ALARM CORRUPT"}
		default:
			return healthDoc{"false", "ALARM UNKNOWN"}
		}
	}
	if !serializable && h.b.Leader() == 0 {
		return healthDoc{"false", "RAFT NO LEADER"}
	}
	if err := h.read(ctx, serializable); err != nil {
		return healthDoc{"false", fmt.Sprintf("RANGE ERROR:%s", err)}
	}
	return healthDoc{"true", ""}
}

// read makes the one-key read a health check rests on: it goes through the
// same path as a client's (read index unless serializable, then the store).
func (h *httpService) read(ctx context.Context, serializable bool) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	_, err := h.b.Range(ctx, &pb.RangeRequest{Key: []byte{0}, KeysOnly: true, Limit: 1, Serializable: serializable})
	return err
}

func (h *httpService) readCheck(serializable bool) func(context.Context) error {
	return func(ctx context.Context) error { return h.read(ctx, serializable) }
}

func (h *httpService) alarmCheck(t pb.AlarmType) func(context.Context) error {
	return func(context.Context) error {
		for _, a := range h.b.Alarms() {
			if a.Alarm == t {
				return fmt.Errorf("alarm activated: %s", t)
			}
		}
		return nil
	}
}

func (h *httpService) learnerCheck(context.Context) error {
	if h.b.Status().IsLearner {
		return errors.New("not supported for learner")
	}
	return nil
}

func (h *httpService) version(w http.ResponseWriter, r *http.Request) {
	if !onlyGET(w, r) {
		return
	}
	// etcd's words for versions not known yet.
	cluster, storage := "not_decided", "unknown"
	if cv := h.b.ClusterVersion(); cv != "" {
		cluster = cv
	}
	if sv := h.b.StorageVersion(); sv != "" {
		storage = sv
	}
	w.Header().Set("Content-Type", "application/json")
	d, _ := json.Marshal(struct {
		Server  string `json:"etcdserver"`
		Cluster string `json:"etcdcluster"`
		Storage string `json:"storage"`
	}{EtcdVersion, cluster, storage})
	w.Write(d)
}

// probes is one of etcd's probe families (/livez, /readyz): named checks
// served together at the root and one by one below it.
type probes struct {
	name   string
	checks map[string]func(context.Context) error
}

func (p probes) install(mux *http.ServeMux, log *slog.Logger) {
	names := slices.Sorted(maps.Keys(p.checks))
	mux.HandleFunc("/"+p.name, func(w http.ResponseWriter, r *http.Request) {
		excluded := querySet(r, "exclude")
		var run []string
		for _, n := range names {
			if !excluded[n] {
				run = append(run, n)
			}
		}
		p.serve(w, r, log, run)
	})
	for _, n := range names {
		mux.HandleFunc("/"+p.name+"/"+n, func(w http.ResponseWriter, r *http.Request) {
			p.serve(w, r, log, []string{n})
		})
	}
}

func (p probes) serve(w http.ResponseWriter, r *http.Request, log *slog.Logger, names []string) {
	if !onlyGET(w, r) {
		return
	}
	var out strings.Builder
	failed := false
	for _, n := range names {
		if err := p.checks[n](r.Context()); err != nil {
			fmt.Fprintf(&out, "[-]%s failed: %v\n", n, err)
			failed = true
		} else {
			fmt.Fprintf(&out, "[+]%s ok\n", n)
		}
	}
	if failed {
		log.Error("health check failed", "path", r.URL.Path, "reason", out.String())
		http.Error(w, out.String(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if _, verbose := r.URL.Query()["verbose"]; verbose {
		fmt.Fprint(w, out.String())
	}
	fmt.Fprint(w, "ok\n")
}

func querySet(r *http.Request, name string) map[string]bool {
	set := make(map[string]bool)
	for _, v := range r.URL.Query()[name] {
		if v != "" {
			set[v] = true
		}
	}
	return set
}

// healthCounters are etcd's counters of /health answers.
type healthCounters struct {
	success, failed prometheus.Counter
}

func healthMetrics(reg prometheus.Registerer) *healthCounters {
	return &healthCounters{
		success: registerCounter(reg, prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "server", Name: "health_success",
			Help: "The total number of successful health checks",
		}),
		failed: registerCounter(reg, prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "server", Name: "health_failures",
			Help: "The total number of failed health checks",
		}),
	}
}

// registerCounter registers a counter, or returns the one already registered
// under its name when several handlers share a registry.
func registerCounter(reg prometheus.Registerer, opts prometheus.CounterOpts) prometheus.Counter {
	c := prometheus.NewCounter(opts)
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(prometheus.Counter); ok {
				return existing
			}
		}
	}
	return c
}
