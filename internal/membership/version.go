package membership

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cairn-db/cairn/internal/storage"
)

// The cluster version and the downgrade job are replicated state like the
// member list: they change only when a committed ClusterVersionSet or
// DowngradeInfoSet entry is applied, in that entry's batch, and a snapshot
// carries them.
//
//	key       value
//	'c' 'v'   the cluster version, "major.minor.0" (absent until decided)
//	'c' 'd'   the downgrade job, JSON (Downgrade; absent if there never was one)
var (
	keyClusterVersion = []byte{storage.PrefixMembership, 'v'}
	keyDowngrade      = []byte{storage.PrefixMembership, 'd'}
)

// Downgrade is the cluster's downgrade job, as etcd keeps it: while
// Enabled, the leader lowers the cluster version to TargetVersion
// ("major.minor.0"). A cancelled job is recorded as the zero Downgrade.
type Downgrade struct {
	TargetVersion string `json:"target-version"`
	Enabled       bool   `json:"enabled"`
}

// StageClusterVersion records the cluster version v ("major.minor.0") in b.
func StageClusterVersion(b *storage.Batch, v string) error {
	return b.Set(keyClusterVersion, []byte(v), nil)
}

// LoadClusterVersion returns the stored cluster version, "" if none was
// decided yet.
func LoadClusterVersion(eng *storage.Engine) (string, error) {
	v, err := eng.Get(keyClusterVersion)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("membership: read cluster version: %w", err)
	}
	return string(v), nil
}

// StageDowngrade records the downgrade job d in b.
func StageDowngrade(b *storage.Batch, d Downgrade) error {
	v, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("membership: encode downgrade: %w", err)
	}
	return b.Set(keyDowngrade, v, nil)
}

// LoadDowngrade returns the stored downgrade job, the zero Downgrade if
// none was ever recorded.
func LoadDowngrade(eng *storage.Engine) (Downgrade, error) {
	var d Downgrade
	v, err := eng.Get(keyDowngrade)
	if errors.Is(err, storage.ErrNotFound) {
		return d, nil
	}
	if err != nil {
		return d, fmt.Errorf("membership: read downgrade: %w", err)
	}
	if err := json.Unmarshal(v, &d); err != nil {
		return d, fmt.Errorf("membership: decode downgrade: %w", err)
	}
	return d, nil
}
