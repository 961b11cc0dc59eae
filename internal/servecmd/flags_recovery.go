package servecmd

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-db/cairn/internal/embed"
)

// recoveryFlags are etcd's flags for recovering from a lost quorum and for
// corruption detection, and its --feature-gates.
type recoveryFlags struct {
	forceNewCluster      bool
	corruptCheckTime     time.Duration
	compactHashCheckTime time.Duration
	gates                featureGates
	// notes are what applyRecovery found to log about the gates.
	notes []string
}

func (f *serveFlags) addRecovery() {
	fs, r := f.fs, &f.recovery
	r.gates = featureGates{}
	fs.BoolVar(&r.forceNewCluster, "force-new-cluster", false, "Force to create a new one member cluster.")
	fs.DurationVar(&r.corruptCheckTime, "corrupt-check-time", 0, "Duration of time between cluster corruption check passes.")
	fs.DurationVar(&r.compactHashCheckTime, "compact-hash-check-time", time.Minute, "Duration of time between leader checks followers compaction hashes.")
	fs.Var(&r.gates, "feature-gates", "A set of key=value pairs that describe server level feature gates for alpha/experimental features. Options are:\n"+
		strings.Join(gateUsage(), "\n"))
}

// applyRecovery sets c's recovery options from the flags. It refuses a
// feature gate cairn does not implement whose setting matters for safety
// or security, and keeps notes to log (warnings) for the others.
func (f *serveFlags) applyRecovery(c *embed.Config) error {
	r := &f.recovery
	enabled, notes, err := r.gates.resolve()
	if err != nil {
		return err
	}
	r.notes = notes
	c.Recovery = embed.RecoveryOptions{
		ForceNewCluster:     r.forceNewCluster,
		CorruptCheckTime:    r.corruptCheckTime,
		InitialCorruptCheck: enabled[gateInitialCorruptCheck],
	}
	// As in etcd, the compaction hash check runs only with its gate on.
	if enabled[gateCompactHashCheck] {
		if r.compactHashCheckTime <= 0 {
			return fmt.Errorf("--compact-hash-check-time must be >0 (set to %v)", r.compactHashCheckTime)
		}
		c.Recovery.CompactHashCheckTime = r.compactHashCheckTime
	}
	return nil
}

// Feature gates etcd 3.7 knows.
const (
	gateAllAlpha                     = "AllAlpha"
	gateAllBeta                      = "AllBeta"
	gateInitialCorruptCheck          = "InitialCorruptCheck"
	gateCompactHashCheck             = "CompactHashCheck"
	gateStopGRPCServiceOnDefrag      = "StopGRPCServiceOnDefrag"
	gateTxnModeWriteWithSharedBuffer = "TxnModeWriteWithSharedBuffer"
	gateLeaseCheckpoint              = "LeaseCheckpoint"
	gateLeaseCheckpointPersist       = "LeaseCheckpointPersist"
	gateSetMemberLocalAddr           = "SetMemberLocalAddr"
	gateFastLeaseKeepAlive           = "FastLeaseKeepAlive"
	gatePriorityRequest              = "PriorityRequest"
)

// gateSupport says what cairn does with a gate.
type gateSupport int

const (
	// gateImplemented: the gate turns the feature on and off.
	gateImplemented gateSupport = iota
	// gateAlwaysOn: cairn always has the behaviour the gate enables in
	// etcd; turning it off is logged and changes nothing.
	gateAlwaysOn
	// gateIgnored: cairn does not implement it and nothing a user relies
	// on for safety or security depends on it; setting it is logged.
	gateIgnored
	// gateRefused: cairn does not implement it, and running as if it were
	// on could break what the user relies on; turning it on is refused.
	gateRefused
)

// gateSpec is etcd's gate: its default and stage, and cairn's support.
type gateSpec struct {
	def     bool
	alpha   bool // else beta
	support gateSupport
	// why explains, in the log or the refusal, what cairn does instead.
	why string
}

// gates are etcd 3.7's server feature gates (server/features).
var gates = map[string]gateSpec{
	gateInitialCorruptCheck: {alpha: true, support: gateImplemented},
	gateCompactHashCheck:    {alpha: true, support: gateImplemented},
	gateStopGRPCServiceOnDefrag: {alpha: true, support: gateIgnored,
		why: "cairn defragments online without pausing requests, so its gRPC health service stays up"},
	gateTxnModeWriteWithSharedBuffer: {def: true, support: gateIgnored,
		why: "a bbolt buffering mode; cairn's storage has no such mode"},
	gateLeaseCheckpoint: {alpha: true, support: gateAlwaysOn,
		why: "cairn always checkpoints long leases' remaining TTL (--lease-checkpoint-interval)"},
	gateLeaseCheckpointPersist: {alpha: true, support: gateAlwaysOn,
		why: "cairn always persists checkpointed remaining TTLs"},
	gateSetMemberLocalAddr: {alpha: true, support: gateRefused,
		why: "cairn does not bind peer connections to the advertised peer address; firewall rules that admit peers by source address would not match"},
	gateFastLeaseKeepAlive: {def: true, support: gateIgnored,
		why: "cairn answers keep-alives on the leader without waiting for the applied index"},
	gatePriorityRequest: {alpha: true, support: gateIgnored,
		why: "cairn has no request priorities"},
}

// gateUsage lists the gates for --help, as etcd does.
func gateUsage() []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(gates)) {
		g := gates[name]
		stage := "BETA"
		if g.alpha {
			stage = "ALPHA"
		}
		out = append(out, fmt.Sprintf("%s=true|false (%s - default=%t)", name, stage, g.def))
	}
	return append([]string{gateAllAlpha + "=true|false (ALPHA - default=false)", gateAllBeta + "=true|false (BETA - default=false)"}, out...)
}

// featureGates is the value of --feature-gates: etcd's syntax,
// "Name=bool,Name=bool", names checked as etcd checks them. Giving the flag
// again adds to the gates set before, as in etcd.
type featureGates map[string]bool

func (g *featureGates) Set(value string) error {
	set := map[string]bool{}
	for _, s := range strings.Split(value, ",") {
		if s == "" {
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		k = strings.TrimSpace(k)
		if !ok {
			return fmt.Errorf("missing bool value for %s", k)
		}
		v = strings.TrimSpace(v)
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("invalid value of %s=%s, err: %w", k, v, err)
		}
		if _, known := gates[k]; !known && k != gateAllAlpha && k != gateAllBeta {
			return fmt.Errorf("unrecognized feature gate: %s", k)
		}
		set[k] = b
	}
	for k, b := range set {
		(*g)[k] = b
	}
	return nil
}

func (g *featureGates) String() string {
	var pairs []string
	for k, v := range *g {
		pairs = append(pairs, fmt.Sprintf("%s=%t", k, v))
	}
	slices.Sort(pairs)
	return strings.Join(pairs, ",")
}

func (g *featureGates) Type() string { return "mapStringBool" }

// resolve returns every gate's state (etcd's defaults, then AllAlpha and
// AllBeta, then the gates named), the notes to log for the gates set that
// cairn does not act on, and an error for one it refuses.
func (g featureGates) resolve() (map[string]bool, []string, error) {
	enabled := map[string]bool{}
	for name, spec := range gates {
		enabled[name] = spec.def
		if all, ok := g[gateAllAlpha]; ok && spec.alpha {
			enabled[name] = all
		}
		if all, ok := g[gateAllBeta]; ok && !spec.alpha {
			enabled[name] = all
		}
		if v, ok := g[name]; ok {
			enabled[name] = v
		}
	}
	var notes []string
	for _, name := range slices.Sorted(maps.Keys(gates)) {
		spec, on := gates[name], enabled[name]
		if on == spec.def && !g.named(name, spec) {
			continue
		}
		switch spec.support {
		case gateRefused:
			if on {
				return nil, nil, fmt.Errorf("feature gate %s=true is not implemented by cairn, and running without it is not safe: %s", name, spec.why)
			}
		case gateAlwaysOn:
			if !on {
				notes = append(notes, fmt.Sprintf("feature gate %s=false is ignored: %s", name, spec.why))
			}
		case gateIgnored:
			notes = append(notes, fmt.Sprintf("feature gate %s=%t is not implemented by cairn and is ignored: %s", name, on, spec.why))
		}
	}
	return enabled, notes, nil
}

// named reports whether the gate was set, by name or through AllAlpha or
// AllBeta.
func (g featureGates) named(name string, spec gateSpec) bool {
	if _, ok := g[name]; ok {
		return true
	}
	if _, ok := g[gateAllAlpha]; ok && spec.alpha {
		return true
	}
	_, ok := g[gateAllBeta]
	return ok && !spec.alpha
}
