package runbook

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-db/cairn/tests/kit"
	"github.com/cairn-db/cairn/tests/kit/proc"
)

// spaceQuota is the --quota-backend-bytes of the NOSPACE tests: small, so
// a few dozen etcdctl puts fill it.
const spaceQuota = 2 << 20

// noSpaceText is etcd's error for a write refused over the quota, as
// etcdctl prints it.
const noSpaceText = "etcdserver: mvcc: database space exceeded"

// TestNoSpaceRunbook follows etcd's runbook for a member out of space with
// the real etcdctl against a cairn process: etcdctl put fails with etcd's
// error, alarm list shows NOSPACE; del --prefix, compaction --physical,
// defrag and alarm disarm make put succeed again, with no alarm left.
func TestNoSpaceRunbook(t *testing.T) {
	s, ctl := startFull(t)
	freeSpace(t, s, ctl)
	// etcd's runbook disarms by hand. cairn may have cleared the alarm
	// itself by now; the disarm succeeds either way.
	ctl.must(t, "alarm", "disarm")
	if out, err := ctl.run(t, "put", "after", "runbook"); err != nil {
		failf(t, []*server{s}, "etcdctl put after the runbook: %v\n%s", err, out)
	}
	if out := ctl.must(t, "alarm", "list"); strings.TrimSpace(out) != "" {
		failf(t, []*server{s}, "etcdctl alarm list after the runbook:\n%s", out)
	}
	if got := strings.TrimSpace(ctl.must(t, "get", "after", "--print-value-only")); got != "runbook" {
		t.Fatalf("etcdctl get after: %q, want %q", got, "runbook")
	}
}

// TestNoSpaceClearsItself is the runbook without the disarm (cairn beyond
// etcd, README "Space"): once del, compaction and defrag bring the member
// back under its quota, the NOSPACE alarm leaves etcdctl alarm list on its
// own and etcdctl put succeeds.
func TestNoSpaceClearsItself(t *testing.T) {
	s, ctl := startFull(t)
	freeSpace(t, s, ctl)
	err := kit.Poll(kit.WaitTimeout, func() error {
		if out := strings.TrimSpace(ctl.must(t, "alarm", "list")); out != "" {
			return fmt.Errorf("etcdctl alarm list still shows:\n%s", out)
		}
		return nil
	})
	if err != nil {
		failf(t, []*server{s}, "the alarm did not clear itself after del, compaction and defrag: %v", err)
	}
	if out, err := ctl.run(t, "put", "after", "self-clear"); err != nil {
		failf(t, []*server{s}, "etcdctl put once the alarm cleared itself: %v\n%s", err, out)
	}
}

// startFull starts a cairn member with a small quota and fills it with
// etcdctl put until a put fails; it checks the failure is etcd's NOSPACE
// error and that etcdctl alarm list shows the alarm.
func startFull(t *testing.T) (*server, etcdctl) {
	t.Helper()
	s := startServer(t, proc.Cairn, "space", filepath.Join(t.TempDir(), "space.cairn"), "", "",
		"--quota-backend-bytes", strconv.Itoa(spaceQuota))
	s.waitServing(t)
	ctl := newEtcdctl(t, s.clientURL)

	// Random values, so the engine's compression cannot shrink them.
	rnd := rand.New(rand.NewPCG(11, 13))
	raw := make([]byte, 36<<10)
	var (
		out string
		err error
		n   int
	)
	for n = 0; ; n++ {
		if n > 4*spaceQuota/len(raw) {
			failf(t, []*server{s}, "%d puts of %d bytes accepted under a %d-byte quota", n, len(raw), spaceQuota)
		}
		for i := range raw {
			raw[i] = byte(rnd.Uint32())
		}
		out, err = ctl.run(t, "put", fmt.Sprintf("/fill/%04d", n), base64.StdEncoding.EncodeToString(raw))
		if err != nil {
			break
		}
	}
	t.Logf("etcdctl put failed after %d puts: %s", n, strings.TrimSpace(out))
	if !strings.Contains(out, noSpaceText) {
		failf(t, []*server{s}, "etcdctl put over the quota failed with\n%s\nwant %q", out, noSpaceText)
	}
	alarms := ctl.must(t, "alarm", "list")
	if !strings.Contains(alarms, "alarm:NOSPACE") {
		failf(t, []*server{s}, "etcdctl alarm list over the quota:\n%s\nwant a NOSPACE alarm", alarms)
	}
	// Writes that add data stay refused while the alarm is raised.
	if out, err := ctl.run(t, "put", "small", "v"); err == nil || !strings.Contains(out, noSpaceText) {
		failf(t, []*server{s}, "etcdctl put with the NOSPACE alarm raised: %v\n%s\nwant %q", err, out, noSpaceText)
	}
	return s, ctl
}

// freeSpace runs the runbook's steps that give the space back: delete the
// keys, compact away their history, defragment.
func freeSpace(t *testing.T, s *server, ctl etcdctl) {
	t.Helper()
	var del struct {
		Header struct {
			Revision int64 `json:"revision"`
		} `json:"header"`
		Deleted int64 `json:"deleted"`
	}
	ctl.json(t, &del, "del", "--prefix", "/fill/")
	if del.Deleted == 0 || del.Header.Revision == 0 {
		failf(t, []*server{s}, "etcdctl del --prefix /fill/ deleted %d keys at revision %d", del.Deleted, del.Header.Revision)
	}
	ctl.must(t, "compaction", "--physical", strconv.FormatInt(del.Header.Revision, 10))
	if out := ctl.must(t, "defrag"); !strings.Contains(out, "Finished defragmenting") {
		failf(t, []*server{s}, "etcdctl defrag:\n%s", out)
	}
}
