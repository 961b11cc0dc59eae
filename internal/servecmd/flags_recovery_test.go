package servecmd

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-db/cairn/internal/embed"
)

func TestRecoveryFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		want    embed.RecoveryOptions
		wantErr string
		// wantNote must be among the warnings; with it empty, no warning
		// may mention a recovery flag or a gate.
		wantNote string
	}{
		{name: "defaults", want: embed.RecoveryOptions{}},
		{name: "force new cluster", args: []string{"--force-new-cluster"}, want: embed.RecoveryOptions{ForceNewCluster: true}},
		{name: "corrupt check time", args: []string{"--corrupt-check-time", "5m"}, want: embed.RecoveryOptions{CorruptCheckTime: 5 * time.Minute}},
		{
			name: "initial check and compaction hash check",
			args: []string{"--feature-gates", "InitialCorruptCheck=true, CompactHashCheck=true", "--compact-hash-check-time", "30s"},
			want: embed.RecoveryOptions{InitialCorruptCheck: true, CompactHashCheckTime: 30 * time.Second},
		},
		{
			name: "compaction hash check takes etcd's default interval",
			args: []string{"--feature-gates=CompactHashCheck=true"},
			want: embed.RecoveryOptions{CompactHashCheckTime: time.Minute},
		},
		{
			name: "the interval alone does not turn the compaction hash check on",
			args: []string{"--compact-hash-check-time", "30s"},
			want: embed.RecoveryOptions{},
		},
		{
			name: "gates add up over several flags",
			args: []string{"--feature-gates=InitialCorruptCheck=true", "--feature-gates=CompactHashCheck=1"},
			want: embed.RecoveryOptions{InitialCorruptCheck: true, CompactHashCheckTime: time.Minute},
		},
		{
			name: "environment",
			env:  []string{"CAIRN_FEATURE_GATES=InitialCorruptCheck=true", "CAIRN_FORCE_NEW_CLUSTER=true"},
			want: embed.RecoveryOptions{InitialCorruptCheck: true, ForceNewCluster: true},
		},
		{name: "unknown gate", args: []string{"--feature-gates=Foo=true"}, wantErr: "unrecognized feature gate: Foo"},
		{name: "missing value", args: []string{"--feature-gates=InitialCorruptCheck"}, wantErr: "missing bool value for InitialCorruptCheck"},
		{name: "bad value", args: []string{"--feature-gates=InitialCorruptCheck=yes"}, wantErr: "invalid value of InitialCorruptCheck=yes"},
		{name: "refused gate", args: []string{"--feature-gates=SetMemberLocalAddr=true"}, wantErr: "feature gate SetMemberLocalAddr=true is not implemented by cairn"},
		{name: "AllAlpha includes the refused gate", args: []string{"--feature-gates=AllAlpha=true"}, wantErr: "SetMemberLocalAddr=true"},
		{
			name:     "AllAlpha without the refused gate",
			args:     []string{"--feature-gates=AllAlpha=true,SetMemberLocalAddr=false"},
			want:     embed.RecoveryOptions{InitialCorruptCheck: true, CompactHashCheckTime: time.Minute},
			wantNote: "feature gate PriorityRequest=true is not implemented by cairn and is ignored",
		},
		{name: "refused gate off", args: []string{"--feature-gates=SetMemberLocalAddr=false"}, want: embed.RecoveryOptions{}},
		{
			name:     "ignored gate",
			args:     []string{"--feature-gates=StopGRPCServiceOnDefrag=true"},
			wantNote: "feature gate StopGRPCServiceOnDefrag=true is not implemented by cairn and is ignored",
		},
		{
			name:     "always-on gate turned off",
			args:     []string{"--feature-gates=LeaseCheckpoint=false"},
			wantNote: "feature gate LeaseCheckpoint=false is ignored",
		},
		{name: "always-on gate turned on", args: []string{"--feature-gates=LeaseCheckpointPersist=true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, warnings, err := parse(t, tc.args, tc.env...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Recovery != tc.want {
				t.Errorf("recovery options %+v, want %+v", cfg.Recovery, tc.want)
			}
			if tc.wantNote != "" {
				if !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, tc.wantNote) }) {
					t.Errorf("warnings %q, want one containing %q", warnings, tc.wantNote)
				}
				return
			}
			for _, w := range warnings {
				for _, name := range []string{"gate", "force-new-cluster", "corrupt-check-time", "compact-hash-check-time"} {
					if strings.Contains(w, name) {
						t.Errorf("unexpected warning %q", w)
					}
				}
			}
		})
	}
}
