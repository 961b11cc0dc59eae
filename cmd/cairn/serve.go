package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newServeCommand is replaced by the real server command (helper C).
func newServeCommand() *cobra.Command {
	return &cobra.Command{
		Use: "cairn",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("cairn: serving is not built yet")
		},
	}
}
