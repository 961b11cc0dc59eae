package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cairn-db/cairn/internal/server"
)

// newSnapshotCommand returns `cairn snapshot`, the offline tools for
// backups in etcd's format (Maintenance.Snapshot's, cairn's or etcd's) and
// cairn's earlier one: restore and status, as etcdutl's.
func newSnapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot <subcommand>",
		Short: "Restore a backup into a new data directory, or describe one",
		Long: `Work with backups: the files etcdctl snapshot save writes, against cairn
(Maintenance.Snapshot) or against etcd, and an etcd member's member/snap/db.

cairn's backups are in etcd's format, a bbolt database with etcd's buckets
and the sha256 digest of the database appended, so etcdutl snapshot status
and etcdutl snapshot restore read them, and a cluster moves from cairn to
etcd and back with its revisions. Both subcommands take:

  - an etcd-format file, from cairn or from etcd (etcdctl snapshot save);
  - an etcd member's member/snap/db, which has no digest;
  - a backup in cairn's earlier format (a file starting "cairnbk1", which
    cairn releases before etcd's format wrote).

The format is told by the file's first bytes. The digest, when there is
one, is checked first, then (etcd format) bbolt's check of every page, so a
truncated or altered file is refused before anything is written.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newSnapshotRestoreCommand(), newSnapshotStatusCommand())
	return cmd
}

func newSnapshotRestoreCommand() *cobra.Command {
	var (
		cfg      server.RestoreConfig
		peerURLs string
	)
	cmd := &cobra.Command{
		Use:   "restore <file> [flags]",
		Short: "Restore a backup into a new data directory for a new cluster",
		Long: `Restore a backup into a new data directory, as etcdutl snapshot restore does.

The file may be etcd's format, from cairn or from etcd (etcdctl snapshot
save, or an etcd member's member/snap/db), or cairn's earlier format (see
cairn snapshot --help). The directory holds every key at every revision the
backup kept, with its create and mod revisions, version and lease, the
store's revision and compaction revision, and the leases with their TTLs;
clients see the same revisions as before the move. The raft log is new.
The member list is new too: the cluster and member IDs are derived from
--initial-cluster, --initial-cluster-token and the peer URLs exactly as for
a new cluster, so the restored cluster is not the old one and its members
cannot talk to the old members. The backup's own member list and alarms are
dropped. Auth comes across as it was: users (their bcrypt password hashes
as they are, so passwords keep working), roles with their permissions, the
auth revision and whether auth is enabled.

For a cluster of several members, restore the same file once per member, each
with its own --name (and --initial-advertise-peer-urls) and the same
--initial-cluster and --initial-cluster-token; then start every member with
the same flags on its directory. The --initial-* flags are not read again
once a data directory exists.

The directory must not exist (or be empty). It is built beside it and renamed
into place once complete.

--wal-dir puts the raft log in a directory of its own, for a member that
runs with the same --wal-dir (see cairn --help). That directory must not
exist (or be empty), must not be the data directory and must not hold it;
it may be inside it (--wal-dir infra1.cairn/wal). A member started on the
data directory without that --wal-dir, or with another, refuses to start,
and so does one given a --wal-dir for a directory restored without.

Example, three members:

  cairn snapshot restore backup.db --name infra1 --data-dir infra1.cairn \
    --initial-cluster infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380,infra3=http://10.0.0.3:2380 \
    --initial-cluster-token restored --initial-advertise-peer-urls http://10.0.0.1:2380`,
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.SnapshotPath = args[0]
			cfg.PeerURLs = splitList(peerURLs)
			if cfg.DataDir == "" {
				cfg.DataDir = cfg.Name + ".cairn"
			}
			if !cmd.Flags().Changed("initial-cluster") {
				cfg.InitialCluster = cfg.Name + "=" + peerURLs
			}
			res, err := server.RestoreSnapshot(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored snapshot %s (%s format, revision %d, %d keys, hash %08x) into %s: member %x of cluster %x\n",
				cfg.SnapshotPath, res.Snapshot.Format, res.Snapshot.Revision, res.Snapshot.TotalKeys, res.Snapshot.Hash,
				cfg.DataDir, res.MemberID, res.ClusterID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "Path to the data directory to create (default \"<name>.cairn\")")
	f.StringVar(&cfg.WalDir, "wal-dir", "", "Path to a dedicated directory to create for the raft log (default: inside the data directory)")
	f.StringVar(&cfg.Name, "name", "default", "Human-readable name for this member")
	f.StringVar(&cfg.InitialCluster, "initial-cluster", "default=http://localhost:2380",
		"Initial cluster configuration for the restored cluster (name=peer-url,...)")
	f.StringVar(&cfg.ClusterToken, "initial-cluster-token", "etcd-cluster", "Initial cluster token for the restored cluster")
	f.StringVar(&peerURLs, "initial-advertise-peer-urls", "http://localhost:2380",
		"List of this member's peer URLs to advertise to the rest of the cluster")
	return cmd
}

func newSnapshotStatusCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "status <file>",
		Short: "Check a backup's integrity and print its hash, revision, key count and size",
		Long: `Check a backup (its sha256 digest, and bbolt's check of every page for an
etcd-format file) and print, as etcdutl snapshot status does:

  HASH        for an etcd-format file, the hash etcdutl prints (a CRC-32 of
              the database's buckets, keys and values); for a file in cairn's
              earlier format, the Maintenance.Hash the member answered when the
              backup was taken
  REVISION    the store's revision
  TOTAL KEYS  etcd format: the live keys at REVISION, as etcdutl counts;
              cairn's earlier format: the stored key versions
  TOTAL SIZE  the database's size (without the digest, as etcdutl reports)
  VERSION     the storage version an etcd-format file records

-w simple (the default) prints them on one line, -w table as a table and
-w json as etcdutl's JSON (hash, revision, totalKey, totalSize, version).
For an etcd-format file the values are etcdutl's own.`,
		Args:         cobra.ExactArgs(1),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := server.SnapshotStatus(args[0])
			if err != nil {
				return err
			}
			return printSnapshotStatus(cmd.OutOrStdout(), format, info)
		},
	}
	cmd.Flags().StringVarP(&format, "write-out", "w", "simple", "Output format: simple, table or json")
	return cmd
}

func printSnapshotStatus(w io.Writer, format string, info server.SnapshotInfo) error {
	switch format {
	case "simple":
		_, err := fmt.Fprintf(w, "%x, %d, %d, %s, %s\n", info.Hash, info.Revision, info.TotalKeys, humanBytes(info.TotalSize), info.Version)
		return err
	case "table":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "HASH\tREVISION\tTOTAL KEYS\tTOTAL SIZE\tVERSION")
		fmt.Fprintf(tw, "%x\t%d\t%d\t%s\t%s\n", info.Hash, info.Revision, info.TotalKeys, humanBytes(info.TotalSize), info.Version)
		return tw.Flush()
	case "json":
		return json.NewEncoder(w).Encode(struct {
			Hash      uint32 `json:"hash"`
			Revision  int64  `json:"revision"`
			TotalKey  int64  `json:"totalKey"`
			TotalSize int64  `json:"totalSize"`
			Version   string `json:"version"`
		}{info.Hash, info.Revision, info.TotalKeys, info.TotalSize, info.Version})
	}
	return errors.New("unknown output format " + format + ": use simple, table or json")
}

// humanBytes formats n in SI units, as etcdutl prints sizes (2.1 MB).
func humanBytes(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	f, units := float64(n), []string{"kB", "MB", "GB", "TB", "PB"}
	i := -1
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
