// Command cairn is the one cairn binary: with no subcommand it serves as a
// member of a cairn cluster, taking etcd's server flags
// (internal/servecmd); its subcommands are the tools around it (bench,
// snapshot restore and status, ...).
package main

import (
	"os"

	"github.com/cairn-db/cairn/internal/servecmd"
)

func main() {
	root := servecmd.Command()
	root.AddCommand(newBenchCommand())
	root.AddCommand(newSnapshotCommand())
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}
